"""The vpcd link: a card served to vsmartcard's virtual reader driver over TCP.

vpcd listens (port 35963 for slot "Virtual PCD 00 00", 35964 for "00 01") and the card connects
to it. Each message is a 2-byte big-endian length and a payload: a 1-byte payload 00 (power off),
01 (power on), 02 (reset) or 04 (get ATR; the only one answered) is a control, anything else is a
command APDU, answered with the card's response (a 1-byte one with 6700, as a reader would).

What vpcd makes impossible: it frames a 1-byte APDU exactly like a control, so the APDUs 00, 01,
02 and 04 never reach the card as commands. 04 is answered with the ATR; 00 powers the card off
and 01/02 reset it (RAM state lost), and since vpcd then waits for an answer no control gets,
the reader would hang: the link notices vpcd's silence after such a control and drops the
connection, so that one call fails (0 bytes or an error) and the card comes back as a new one.

pcscd reads an ATR only when it sees a card arrive, so before the link goes (stopped, or after
such a hang-up) it waits until vpcd has polled the slot empty: the next server on the port is
then always read as a newly inserted card.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from cardos import redact
from cardos.card import Card

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04
_CONTROLS = (CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR)
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
DEFAULT_PORT = 35963
SILENCE_AFTER_CONTROL = 3.0  # seconds: more than seven of pcscd's presence polls
SIGN_OFF_TIMEOUT = 3.0
log = logging.getLogger("sscard.vpcd")


class LinkClosed(ConnectionError):
    """vpcd closed the connection (pcscd stopped or restarted)."""


class CardSwap(Exception):
    """The served card changes: the link disconnects so the reader sees it removed."""


class VpcdLink:
    """Serves one card to one vpcd slot until stopped, reconnecting whenever vpcd goes away."""

    def __init__(self, card: Card, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 on_change: Callable[[Card], None] | None = None, stop: threading.Event | None = None,
                 next_card: Callable[[Card], Card | None] | None = None) -> None:
        self.card = card
        self.next_card = next_card
        self.host, self.port = host, port
        self.on_change = on_change
        self.stop = stop or threading.Event()
        self.connected = threading.Event()
        self.apdus = 0
        self.silence_after_control = SILENCE_AFTER_CONTROL
        self.sign_off_timeout = SIGN_OFF_TIMEOUT
        self._redactor = redact.Redactor()
        self._sock: socket.socket | None = None

    # -- framing ----------------------------------------------------------------------------
    def _receive(self, sock: socket.socket) -> bytes:
        """The payload of vpcd's next frame (2-byte length ‖ payload), read to its last byte and no further."""
        buf = bytearray()
        end = 2
        while True:
            have = len(buf)
            if have == 2 and end == 2:
                end = 2 + ((buf[0] << 8) | buf[1])
            if have == end:
                return bytes(memoryview(buf)[2:])
            if _QUICKACK is not None:
                # vpcd writes a frame's length and payload separately; with Nagle on its side and
                # delayed ACKs on ours each APDU would stall ~40 ms. Linux clears QUICKACK after
                # every receive, so it is set again each time.
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            chunk = sock.recv(end - have)
            if not chunk:
                raise LinkClosed("stopping" if self.stop.is_set() else "vpcd closed the connection")
            buf += chunk

    @staticmethod
    def _send(sock: socket.socket, payload: bytes) -> None:
        sock.sendall(len(payload).to_bytes(2, "big") + payload)

    # -- one message ----------------------------------------------------------------------------
    def handle(self, msg: bytes) -> bytes | None:
        """The answer to one vpcd message (None when vpcd expects none)."""
        if len(msg) == 1 and msg[0] in _CONTROLS:
            ctrl = msg[0]
            if ctrl == CTRL_ATR:
                return self.card.atr
            if ctrl == CTRL_OFF:
                self.card.power_off()
                if self.next_card is not None:
                    following = self.next_card(self.card)
                    if following is not self.card:
                        # Take the card out of the reader: vpcd sees it leave, then the next arrive.
                        self.card = following
                        raise CardSwap()
            else:
                self.card.power_on()
            return None
        card = self.card
        store = card.store
        before = store.commits
        resp = card.transmit(msg)
        self.apdus += 1
        if log.isEnabledFor(logging.INFO):
            log.info("port %d: %s -> %s", self.port, redact.command(msg), self._redactor.response(msg, resp))
        # Saved before the answer leaves: a reader that has the answer has a card that keeps it.
        if store.commits != before and self.on_change is not None:
            self.on_change(card)
        return resp

    # -- the loop ---------------------------------------------------------------------------------
    def serve(self) -> None:
        """Connect to vpcd and answer it until stop is set; reconnect when it goes away."""
        delay = 0.1
        while not self.stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2)
            except OSError:
                self.stop.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.1
            stuck = self._answer(sock)
            if self.stop.is_set() or stuck:
                # Stopping, or leaving a vpcd that waited in vain: the card must come back (here or
                # in the next server) as a newly inserted one.
                self._sign_off()
                continue
            if self.card is None:
                log.info("port %d: hopper empty", self.port)
                self.stop.wait()
                return
            # Give pcscd time to poll the empty slot, so it reads the next card's ATR afresh.
            self.stop.wait(0.6 if self.next_card else 0.05)

    def _answer(self, sock: socket.socket) -> bool:
        """Answer vpcd on one connection until it ends; True when vpcd got stuck on a 1-byte APDU."""
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.connected.set()
        log.info("port %d: connected to vpcd", self.port)
        timeout = None
        receive, handle = self._receive, self.handle
        try:
            # shutdown() sets stop, then shuts the socket down so that the next read fails: the
            # stop test is needed only here, for a shutdown that came before the socket was set.
            if self.stop.is_set():
                raise LinkClosed("stopping")
            while True:
                answer = handle(receive(sock))
                if answer is not None:
                    self._send(sock, answer)
                # After a real 00/01/02 vpcd speaks again within a poll (~0.4 s); silence means
                # it took a 1-byte APDU for that control and waits for an answer that none gets.
                # Set only when it changes: each setting is a system call, and APDUs keep it None.
                wanted = self.silence_after_control if answer is None else None
                if wanted != timeout:
                    sock.settimeout(wanted)
                    timeout = wanted
        except CardSwap:
            log.info("port %d: card swapped", self.port)
        except TimeoutError:
            log.warning("port %d: vpcd silent after a 00/01/02 byte, so it was a 1-byte APDU that vpcd "
                        "cannot deliver; dropping the link so the reader recovers", self.port)
            return True
        except (LinkClosed, OSError) as e:
            if not self.stop.is_set():
                log.warning("port %d: %s; reconnecting", self.port, e)
        finally:
            self.connected.clear()
            sock.close()
            # The reader saw the card vanish: RAM state is gone as after pulling the card.
            if self.card is not None:
                self.card.power_off()
        return False

    def _sign_off(self) -> None:
        """Return once pcscd has seen the slot empty, so that the next server on this port is read
        as a newly inserted card: pcscd reads an ATR only when it sees a card arrive."""
        # vpcd accepts a new connection only after dropping ours, in a presence poll that then
        # reported the slot empty; the first thing it sends on the new one is the next poll's "get
        # ATR". Closing without an answer makes that poll report the slot empty as well.
        try:
            with socket.create_connection((self.host, self.port), timeout=self.sign_off_timeout) as probe:
                probe.settimeout(self.sign_off_timeout)
                self._receive(probe)     # read whole, so closing sends no reset
        except OSError as e:
            # No vpcd, or one too busy to poll: nothing more to wait for.
            log.info("port %d: signed off without vpcd's poll (%s)", self.port, e)
            return
        log.info("port %d: signed off: vpcd polled the empty slot", self.port)

    def shutdown(self) -> None:
        """Stop serving: wake the blocked read by shutting the connection down."""
        self.stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve, name=f"vpcd:{self.port}", daemon=True)
        t.start()
        return t
