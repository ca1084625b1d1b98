"""A transport to any PC/SC reader through pyscard, every wait bounded by a timeout."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .transport import TransportError, complete

try:
    from smartcard import scard
except ImportError:  # pragma: no cover - pyscard is a dependency; this names the missing part
    scard = None


def _need_pyscard() -> None:
    if scard is None:
        raise TransportError("pyscard is not installed (pip install pyscard; it needs swig and libpcsclite-dev)")


def _check(hresult: int, what: str) -> None:
    if hresult != scard.SCARD_S_SUCCESS:
        raise TransportError(f"{what}: {scard.SCardGetErrorMessage(hresult).strip()} ({hresult & 0xFFFFFFFF:#010x})")


def _bounded(fn, timeout: float, what: str):
    """Run a PC/SC call that has no timeout of its own in a thread, and give up after `timeout`."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller below
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TransportError(f"{what}: no answer from pcscd within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Context:
    def __init__(self, timeout: float) -> None:
        _need_pyscard()
        hresult, self.handle = _bounded(lambda: scard.SCardEstablishContext(scard.SCARD_SCOPE_USER), timeout,
                                        "connect to pcscd")
        _check(hresult, "SCardEstablishContext (is pcscd running?)")

    def readers(self) -> list[str]:
        hresult, names = scard.SCardListReaders(self.handle, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, "SCardListReaders")
        return list(names)

    def status(self, reader: str, timeout: float) -> tuple[bool, bytes]:
        """Whether a card is in the reader, waiting up to timeout for one to arrive, and its ATR."""
        deadline = time.monotonic() + timeout
        known, wait_ms = scard.SCARD_STATE_UNAWARE, 0   # first: the state now, at once
        while True:
            hresult, states = scard.SCardGetStatusChange(self.handle, wait_ms, [(reader, known)])
            if hresult == scard.SCARD_E_TIMEOUT:
                return False, b""
            _check(hresult, f"SCardGetStatusChange({reader})")
            _, state, atr = states[0]
            if state & scard.SCARD_STATE_PRESENT or time.monotonic() >= deadline:
                return bool(state & scard.SCARD_STATE_PRESENT), bytes(atr)
            known = state & ~scard.SCARD_STATE_CHANGED
            wait_ms = max(1, int((deadline - time.monotonic()) * 1000))

    def close(self) -> None:
        scard.SCardReleaseContext(self.handle)


@dataclass(frozen=True)
class ReaderInfo:
    """A PC/SC reader and whether a card is in it."""

    name: str
    present: bool
    atr: bytes


def list_readers(timeout: float = 5.0) -> list[ReaderInfo]:
    """Every reader pcscd knows, with card presence and ATR."""
    ctx = _Context(timeout)
    try:
        return [ReaderInfo(name, *ctx.status(name, 0)) for name in ctx.readers()]
    finally:
        ctx.close()


class PcscTransport:
    """A card in a PC/SC reader; 61xx and 6Cxx are followed so callers see whole answers."""

    def __init__(self, reader: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._ctx = _Context(timeout)
        try:
            names = self._ctx.readers()
            matches = [n for n in names if n == reader] or [n for n in names if n.startswith(reader)]
            if not matches:
                raise TransportError(f"no reader named {reader!r} (readers: {', '.join(names) or 'none'})")
            self.name = matches[0]
            present, _ = self._ctx.status(self.name, timeout)
            if not present:
                raise TransportError(f"{self.name}: no card within {timeout:g} s")
            hresult, self._card, self._protocol = _bounded(
                lambda: scard.SCardConnect(self._ctx.handle, self.name, scard.SCARD_SHARE_SHARED,
                                           scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1),
                timeout, f"connect to the card in {self.name}")
            _check(hresult, f"SCardConnect({self.name})")
        except BaseException:
            self._ctx.close()
            raise

    def _raw(self, apdu: bytes) -> bytes:
        hresult, response = _bounded(lambda: scard.SCardTransmit(self._card, self._protocol, list(apdu)),
                                     self.timeout, f"{self.name}: transmit")
        _check(hresult, f"{self.name}: SCardTransmit")
        return bytes(response)

    def transmit(self, apdu: bytes) -> bytes:
        return complete(self._raw, apdu)

    def transmit_raw(self, apdu: bytes) -> bytes:
        return self._raw(apdu)

    def atr(self) -> bytes:
        hresult, _, _, _, atr = scard.SCardStatus(self._card)
        _check(hresult, f"{self.name}: SCardStatus")
        return bytes(atr)

    def reset(self) -> bytes:
        hresult, self._protocol = _bounded(
            lambda: scard.SCardReconnect(self._card, scard.SCARD_SHARE_SHARED,
                                         scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1, scard.SCARD_RESET_CARD),
            self.timeout, f"{self.name}: reset")
        _check(hresult, f"{self.name}: SCardReconnect")
        return self.atr()

    def close(self, unpower: bool = False) -> None:
        """Release the card; unpower=True powers it down (a card feeder takes that as "next card")."""
        try:
            scard.SCardDisconnect(self._card, scard.SCARD_UNPOWER_CARD if unpower else scard.SCARD_LEAVE_CARD)
        finally:
            self._ctx.close()
