"""The transport anchor: a minimal vpcd card that answers every APDU with 9000 and does nothing
else, with the same socket options as sscard's link (TCP_NODELAY, TCP_QUICKACK before reads)."""

from __future__ import annotations

import socket
import struct
import sys

ATR = bytes.fromhex("3B6D000000ECC0ECC0ECC0ECC0ECC0ECC0")


def serve(port: int) -> None:
    quickack = getattr(socket, "TCP_QUICKACK", None)
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
        except OSError:
            import time
            time.sleep(0.1)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def read(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                if quickack is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError
                buf += chunk
            return buf
        try:
            while True:
                (n,) = struct.unpack(">H", read(2))
                msg = read(n)
                if n == 1:
                    if msg[0] == 4:
                        sock.sendall(struct.pack(">H", len(ATR)) + ATR)
                    continue
                sock.sendall(b"\x00\x02\x90\x00")
        except (ConnectionError, OSError):
            sock.close()


if __name__ == "__main__":
    print("echo card serving", flush=True)
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 35964)
