"""Short command APDUs of ISO 7816-4 (cases 1 to 4) and their answers."""

from __future__ import annotations

from typing import NamedTuple

from . import sw
from .sw import CardError


class Apdu(NamedTuple):
    """One command APDU; le is None when absent and 256 for Le = 00."""

    # A named tuple, not a frozen dataclass: as immutable, and built in a third of the time,
    # which every command pays.
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    lc_present: bool = False

    @property
    def case(self) -> int:
        if self.lc_present:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def secured(self) -> bool:
        """CLA bit 3: the command carries a line-protection MAC (04 / 84)."""
        return bool(self.cla & 0x04)

    @property
    def channel(self) -> int:
        return self.cla & 0x03

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))


# Every field given, in order: the tuple is built without the keyword handling of Apdu(...).
_new = tuple.__new__


def parse(raw: bytes) -> Apdu:
    """Parse a short APDU; a length that fits no case raises 6700."""
    n = len(raw)
    if n == 5:      # case 2, what terminals send most (READ RECORD, READ BINARY): tested first
        cla, ins, p1, p2, le = raw
        return _new(Apdu, (cla, ins, p1, p2, b"", le or 256, False))
    if n < 5:
        if n < 4:
            raise CardError(sw.WRONG_LENGTH, "APDU shorter than its header")
        cla, ins, p1, p2 = raw
        return _new(Apdu, (cla, ins, p1, p2, b"", None, False))
    lc = raw[4]
    if lc == 0:
        # An Lc of 00 followed by more bytes announces an extended APDU, which the card lacks.
        raise CardError(sw.WRONG_LENGTH, "extended length not supported")
    if n == 5 + lc:
        return _new(Apdu, (raw[0], raw[1], raw[2], raw[3], raw[5:], None, True))
    if n == 6 + lc:
        return _new(Apdu, (raw[0], raw[1], raw[2], raw[3], raw[5:-1], raw[-1] or 256, True))
    raise CardError(sw.WRONG_LENGTH, f"Lc {lc} does not match {n - 5} body bytes")


def build(cla: int, ins: int, p1: int, p2: int, data: bytes | None = None, le: int | None = None) -> bytes:
    """Encode a short APDU (terminal side); data None means no Lc field."""
    out = bytes((cla, ins, p1, p2))
    if data is not None:
        if not 1 <= len(data) <= 255:
            raise ValueError(f"command data of {len(data)} bytes does not fit a short APDU")
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le & 0xFF])
    return out


def split_response(resp: bytes) -> tuple[bytes, int]:
    """Split an answer into its data and status word."""
    if len(resp) < 2:
        raise ValueError("response shorter than a status word")
    return resp[:-2], (resp[-2] << 8) | resp[-1]
