"""The command APDUs a terminal sends a social security card, built in one place (spec §3)."""

from __future__ import annotations

from collections.abc import Callable

from cardos.apdu import build
from cardos.crypto import Algorithm

MF = 0x3F00
SSSE_NAME = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")   # "sx1.sh.社会保障" (GBK)
ISSUER_DATA_SFI = 0x05


ALGORITHM_FLAG = bytes.fromhex("9F0C038601")
FLAG_NAMES = {0x01: "3DES", 0x02: "SSF33", 0x03: "SM4"}


def algorithm_flag(fci: bytes) -> int:
    """The SSSE FCI's algorithm flag 9F0C 03 86 01 xx, searched as terminals do; 01 (3DES) when absent."""
    at = fci.find(ALGORITHM_FLAG)
    return fci[at + len(ALGORITHM_FLAG)] if at >= 0 and at + len(ALGORITHM_FLAG) < len(fci) else 0x01


def select_fid(fid: int) -> bytes:
    return build(0x00, 0xA4, 0x00, 0x00, fid.to_bytes(2, "big"))


def select_name(name: bytes) -> bytes:
    return build(0x00, 0xA4, 0x04, 0x00, name)


def select_path(path: tuple[int, ...]) -> list[bytes]:
    """The SELECTs by FID that walk from the MF down to the DF at path (path starts at 3F00)."""
    return [select_fid(MF)] + [select_fid(fid) for fid in path[1:]]


def get_challenge(n: int = 8) -> bytes:
    return build(0x00, 0x84, 0x00, 0x00, le=n)


def read_record(number: int, sfi: int, by_tag: bool = False) -> bytes:
    """READ RECORD by record number (P2 b3-b1 = 100) or by tag (P2 b3-b1 = 000), Le 00."""
    return build(0x00, 0xB2, number, (sfi << 3) | (0 if by_tag else 0x04), le=0)


def update_record(number: int, sfi: int, record: bytes, by_tag: bool = False) -> bytes:
    return build(0x00, 0xDC, number, (sfi << 3) | (0 if by_tag else 0x04), record)


def append_record(sfi: int, record: bytes) -> bytes:
    return build(0x00, 0xE2, 0x00, sfi << 3, record)


def read_binary(sfi: int, offset: int = 0, le: int = 0) -> bytes:
    return build(0x00, 0xB0, 0x80 | sfi, offset, le=le)


def challenge_block(alg: Algorithm, challenge: bytes) -> bytes:
    """The challenge as the block a cryptogram covers: padded with zeros to the algorithm's block."""
    return (challenge + bytes(alg.block))[: alg.block]


def external_authenticate(key_id: int, cryptogram: bytes) -> bytes:
    return build(0x00, 0x82, 0x00, key_id, cryptogram)


def internal_authenticate(key_id: int, process: bytes, source: bytes) -> bytes:
    return build(0x00, 0x88, 0x00, key_id, process + source)


def with_mac(cla: int, ins: int, p1: int, p2: int, body: bytes, mac: Callable[[bytes], bytes]) -> bytes:
    """A command with a trailing MAC4 over header ‖ Lc ‖ body, Lc counting the MAC (spec §3)."""
    return build(cla, ins, p1, p2, body + mac(bytes((cla, ins, p1, p2, len(body) + 4)) + body))
