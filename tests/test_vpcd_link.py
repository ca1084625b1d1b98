"""The vpcd link against a stand-in vpcd on loopback: framing, controls, partial reads, reconnects."""

import contextlib
import os
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from reader_bridge.vpcd import CTRL_ATR, CTRL_OFF, CTRL_ON, CTRL_RESET, VpcdLink
from tests.ss import card


def _listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    return srv, srv.getsockname()[1]


@contextlib.contextmanager
def _linked(c, **settings):
    """A link serving c to a stand-in vpcd; yields the link, its thread, the listener and a function
    that accepts the link's next connection."""
    srv, port = _listener()
    link = VpcdLink(c, port=port)
    for name, value in settings.items():
        setattr(link, name, value)
    thread = link.start()

    def accept():
        conn, _ = srv.accept()
        conn.settimeout(10)
        return conn
    try:
        yield link, thread, accept
    finally:
        link.shutdown()
        srv.close()                     # no stand-in vpcd left: the link's sign-off ends at once
        thread.join(5)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def _read_frame(conn) -> bytes:
    head = b""
    while len(head) < 2:
        head += conn.recv(2 - len(head))
    (n,) = struct.unpack(">H", head)
    body = b""
    while len(body) < n:
        body += conn.recv(n - len(body))
    return body


def test_frames_sent_a_byte_at_a_time_controls_and_a_reconnect():
    c = card()
    srv, port = _listener()
    link = VpcdLink(c, port=port)
    thread = link.start()
    try:
        conn, _ = srv.accept()
        conn.settimeout(10)

        def send(payload: bytes, dribble: bool = False) -> None:
            frame = struct.pack(">H", len(payload)) + payload
            if dribble:
                for b in frame:                      # the worst a TCP stream can do
                    conn.sendall(bytes([b]))
            else:
                conn.sendall(frame)

        send(b"\x04")
        assert _read_frame(conn) == c.atr                          # get ATR: answered
        send(b"\x01")                                               # power on: no answer
        send(bytes.fromhex("00A40000023F00"), dribble=True)
        assert _read_frame(conn)[-2:] == b"\x90\x00"
        frames = b"".join(struct.pack(">H", len(a)) + a for a in (
            bytes.fromhex("00A404000F7378312E73682EC9E7BBE1B1A3D5CF"), bytes.fromhex("00B2072C00")))
        conn.sendall(frames)                                        # two frames in one segment
        assert _read_frame(conn)[-2:] == b"\x90\x00"
        assert _read_frame(conn)[:2] == b"\x07\x09"
        conn.close()                                                # vpcd goes away …
        again, _ = srv.accept()                                     # … and the link comes back
        again.settimeout(10)
        again.sendall(struct.pack(">H", 1) + b"\x04")
        assert _read_frame(again) == c.atr
        assert link.apdus == 3 and thread.is_alive()
        again.close()
    finally:
        link.shutdown()
        srv.close()                     # no stand-in vpcd left: the link's sign-off ends at once
        thread.join(5)
    assert not thread.is_alive()


@settings(max_examples=60, deadline=None)
@given(byte=st.integers(0, 255).filter(lambda b: b not in (CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR)))
def test_a_one_byte_apdu_that_is_no_control_code_is_answered_6700(byte):
    # vpcd frames a 1-byte APDU exactly like a control; any other byte than the four codes can
    # only be an APDU, and vpcd waits for its answer.
    c = card()
    link = VpcdLink(c, port=1)
    assert link.handle(bytes([byte])) == b"\x67\x00"
    assert link.handle(bytes.fromhex("00A40000023F00"))[-2:] == b"\x90\x00"
    assert link.apdus == 2


def test_over_a_socket_a_one_byte_apdu_gets_its_answer_and_the_link_goes_on():
    c = card()
    with _linked(c) as (_, _, accept):
        conn = accept()
        conn.sendall(_frame(b"\xA9"))
        assert _read_frame(conn) == b"\x67\x00"
        conn.sendall(_frame(bytes.fromhex("00A40000023F00")))
        assert _read_frame(conn)[-2:] == b"\x90\x00"
        conn.sendall(_frame(b"\x04"))
        assert _read_frame(conn) == c.atr
        conn.close()


def test_a_one_byte_apdu_vpcd_took_for_a_control_drops_the_link_instead_of_hanging_the_reader():
    # vpcd sends the APDU 01 exactly like "power on" and then waits for an answer; a real power-on
    # is followed at once by "get ATR". The link takes the silence for what it is and reconnects.
    c = card()
    with _linked(c, silence_after_control=0.3) as (_, _, accept):
        conn = accept()
        conn.sendall(_frame(b"\x01") + _frame(b"\x04"))      # a real power-on: ATR asked at once
        assert _read_frame(conn) == c.atr
        conn.sendall(_frame(b"\x01"))                          # the APDU 01: vpcd now only waits
        assert conn.recv(16) == b""                             # the link hung up on it,
        probe = accept()                                        # signed off (the slot reads empty)
        probe.sendall(_frame(b"\x04"))
        assert probe.recv(16) == b""
        again = accept()                                        # and came back as a new card
        again.sendall(_frame(b"\x04"))
        assert _read_frame(again) == c.atr
        for s in (again, probe, conn):
            s.close()


def test_on_shutdown_the_link_returns_once_vpcd_has_polled_the_slot_empty():
    # vpcd takes a new connection only after dropping the old one in a presence poll (slot empty),
    # and its first word on the new one is the next poll's "get ATR". The link waits for that word
    # and leaves it unanswered, so that poll finds the slot empty too.
    c = card()
    with _linked(c) as (link, thread, accept):
        conn = accept()
        conn.sendall(_frame(b"\x04"))
        assert _read_frame(conn) == c.atr
        link.shutdown()
        assert conn.recv(16) == b""                                 # the served link is closed …
        probe = accept()                                            # … and the link signs off
        assert thread.is_alive()                                    # still waiting for vpcd's poll
        probe.sendall(_frame(b"\x04"))
        assert probe.recv(16) == b""                                # no ATR: the slot reads empty
        thread.join(10)
        assert not thread.is_alive()
        probe.close()
        conn.close()


# -- the image kept in step, and nothing written for what changed nothing ------------------------
_RIGHT_PIN, _WRONG_PIN = "0020000003123456", "0020000003999999"
_UNCHANGING = ("00A40000023F00", "0084000008", "00A404000B" + b"SSCARD.DEMO".hex())


def _served_demo(tmp_path):
    from cardos import image
    from personalize.demo import demo_card
    from reader_bridge.persist import ImageSaver
    from tests.util import select_demo

    c = demo_card()
    select_demo(c)
    path = tmp_path / "card.json"
    image.save(c, path)
    return c, path, ImageSaver(str(path), c)


def test_over_a_socket_a_changing_apdu_is_on_disk_before_its_answer_and_a_reading_one_writes_nothing(
        tmp_path, monkeypatch):
    from cardos import image
    c, path, saver = _served_demo(tmp_path)
    on_disk_at_answer = []
    send = VpcdLink._send

    def watched_send(sock, payload):
        on_disk_at_answer.append((image.load(path).store.data, os.stat(path).st_ino))
        send(sock, payload)
    monkeypatch.setattr(VpcdLink, "_send", staticmethod(watched_send))
    srv, port = _listener()
    link = VpcdLink(c, port=port, on_change=saver)
    thread = link.start()
    try:
        conn, _ = srv.accept()
        conn.settimeout(10)
        conn.sendall(_frame(bytes.fromhex(_WRONG_PIN)))
        assert _read_frame(conn)[:2] == b"\x63\xC5"
        assert on_disk_at_answer[-1][0] == c.store.data            # the decrement was saved first
        inode = on_disk_at_answer[-1][1]
        for apdu in _UNCHANGING:
            conn.sendall(_frame(bytes.fromhex(apdu)))
            assert _read_frame(conn)[-2:] == b"\x90\x00"
        conn.sendall(_frame(bytes.fromhex(_RIGHT_PIN)))            # restores the counter: a change
        assert _read_frame(conn) == b"\x90\x00"
        assert on_disk_at_answer[-1][0] == c.store.data
        conn.sendall(_frame(bytes.fromhex(_RIGHT_PIN)))            # decrements and restores: none
        assert _read_frame(conn) == b"\x90\x00"
        conn.close()
    finally:
        link.shutdown()
        srv.close()
        thread.join(5)
    inodes = [i for _, i in on_disk_at_answer]
    assert inodes[1:1 + len(_UNCHANGING)] == [inode] * len(_UNCHANGING)
    assert inodes[-1] == inodes[-2] != inode
    assert saver.writes == 2


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(st.sampled_from((_RIGHT_PIN, _WRONG_PIN) + _UNCHANGING), min_size=1, max_size=14))
def test_after_every_apdu_the_image_holds_the_card_and_only_changes_rewrite_it(tmp_path_factory, steps):
    from cardos import image
    c, path, saver = _served_demo(tmp_path_factory.mktemp("img"))
    link = VpcdLink(c, port=1, on_change=saver)
    writes = 0
    for apdu in steps:
        before, inode = dict(c.store.data), os.stat(path).st_ino
        link.handle(bytes.fromhex(apdu))      # the link sends the answer only once this returns
        changed = c.store.data != before
        writes += changed
        assert image.load(path).store.data == c.store.data
        assert (os.stat(path).st_ino != inode) == changed, apdu
    assert saver.writes == writes
