"""Terminal side of FMCOS 2.0 initialization: the APDUs that create files, load keys and erase."""

from __future__ import annotations

from dataclasses import dataclass

from cardos.apdu import build
from cardos.crypto import Algorithm, encrypt_ecb, mac4, seal
from cardos.files import FileSpec, KeyRecord
from terminal import apdus
from terminal.apdus import get_challenge, select_fid, select_path  # noqa: F401 - FMCOS scripts use them


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


def secured(cla: int, ins: int, p1: int, p2: int, body: bytes, alg: Algorithm, key: bytes,
            challenge: bytes) -> bytes:
    """A command with a trailing MAC4 over header ‖ Lc ‖ body (spec §3 line protection)."""
    return apdus.with_mac(cla, ins, p1, p2, body, lambda data: mac4(alg, key, challenge, data))


def write_key_secured(record: KeyRecord, alg: Algorithm, master: bytes, challenge: bytes,
                      replace: bool = True) -> bytes:
    """84 D4: the key record sealed and MACed under the DF's 39/00 key (spec §3b)."""
    p1 = record.base if replace else 0x01
    return secured(0x84, 0xD4, p1, record.id, seal(alg, master, record.write_data()), alg, master, challenge)


def external_authenticate(alg: Algorithm, key: bytes, challenge: bytes, key_id: int) -> bytes:
    """EXTERNAL AUTHENTICATE with E(K, challenge padded to a block)."""
    return apdus.external_authenticate(key_id, encrypt_ecb(alg, key, apdus.challenge_block(alg, challenge)))


def erase_df() -> bytes:
    return bytes.fromhex("800E000000")
