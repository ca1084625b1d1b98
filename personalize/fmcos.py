"""Terminal side of FMCOS 2.0 initialization: the APDUs that create files, load keys and erase."""

from __future__ import annotations

from dataclasses import dataclass

from cardos.apdu import build
from cardos.files import FileSpec, KeyRecord
from terminal.apdus import select_fid, select_path  # noqa: F401 - FMCOS scripts use them


@dataclass(frozen=True)
class Step:
    """One APDU of a script, with what it does and the status words that count as success."""

    apdu: bytes
    note: str
    expect: tuple[int, ...] = (0x9000,)
    secret: bool = False


def create_file(spec: FileSpec) -> bytes:
    """CREATE FILE 80 E0 FID with the spec's FMCOS description."""
    return build(0x80, 0xE0, spec.fid >> 8, spec.fid & 0xFF, spec.create_data())


def write_key(record: KeyRecord, replace: bool = False) -> bytes:
    """Plain WRITE KEY: 80 D4 01 id adds, 80 D4 type id replaces."""
    p1 = record.base if replace else 0x01
    return build(0x80, 0xD4, p1, record.id, record.write_data())


def erase_df() -> bytes:
    return bytes.fromhex("800E000000")
