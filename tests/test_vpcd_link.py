"""The vpcd link against a stand-in vpcd on loopback: framing, controls, partial reads, reconnects."""

import socket
import struct

from reader_bridge.vpcd import VpcdLink
from tests.ss import card


def _listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    return srv, srv.getsockname()[1]


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
        thread.join(5)
        srv.close()
    assert not thread.is_alive()
