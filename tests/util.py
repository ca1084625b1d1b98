"""Terminal-side helpers the tests share: send hex, check status words, authenticate, MAC.

The APDU builders here take a key in clear; the product's terminal goes through a security module
(terminal.flows), so only tests build commands this way."""

from __future__ import annotations

from cardos import sw as SW
from cardos.apdu import split_response
from cardos.crypto import Algorithm, encrypt_ecb, mac4, seal
from cardos.files import KeyRecord
from terminal import apdus


def tx(card, apdu: str | bytes) -> tuple[bytes, int]:
    raw = bytes.fromhex(apdu.replace(" ", "")) if isinstance(apdu, str) else apdu
    return split_response(card.transmit(raw))


def sw(card, apdu: str | bytes) -> int:
    return tx(card, apdu)[1]


def ok(card, apdu: str | bytes) -> bytes:
    data, status = tx(card, apdu)
    assert status == 0x9000, f"{apdu if isinstance(apdu, str) else apdu.hex()} -> {status:04X}"
    return data


# The status words spec §5 lists; 61xx, 6Cxx and 63Cx are families.
_SPEC_SWS = frozenset({
    SW.OK, SW.DATA_MAY_BE_CORRUPTED, SW.MEMORY_FAILURE, SW.WRONG_LENGTH, SW.CHANNEL_NOT_SUPPORTED,
    SW.SECURITY_NOT_SATISFIED, SW.BLOCKED, SW.REFERENCE_DATA_UNUSABLE, SW.CONDITIONS_NOT_SATISFIED,
    SW.NO_CURRENT_EF, SW.MAC_WRONG, SW.WRONG_DATA, SW.FUNCTION_NOT_SUPPORTED, SW.FILE_NOT_FOUND,
    SW.RECORD_NOT_FOUND, SW.NOT_ENOUGH_MEMORY, SW.WRONG_P1P2, SW.REFERENCE_NOT_FOUND, SW.OFFSET_BEYOND_FILE,
    SW.INS_NOT_SUPPORTED, SW.CLA_NOT_SUPPORTED, SW.APPLICATION_LOCKED, SW.AUTHENTICATION_FAILED,
})


def is_spec_sw(status: int) -> bool:
    """True when status is one of the status words spec §5 lists (families included)."""
    return status in _SPEC_SWS or status >> 8 in (0x61, 0x6C) or (status & 0xFFF0) == SW.PIN_WRONG


def secured_apdu(cla: int, ins: int, p1: int, p2: int, body: bytes, alg: Algorithm, key: bytes,
                 challenge: bytes) -> bytes:
    """A command with a trailing MAC4 over header ‖ Lc ‖ body (spec §3 line protection)."""
    return apdus.with_mac(cla, ins, p1, p2, body, lambda data: mac4(alg, key, challenge, data))


def write_key_secured_apdu(record: KeyRecord, alg: Algorithm, master: bytes, challenge: bytes) -> bytes:
    """84 D4 type id: the key record replaced, sealed and MACed under the DF's 39/00 key (spec §3b)."""
    body = seal(alg, master, record.write_data())
    return secured_apdu(0x84, 0xD4, record.base, record.id, body, alg, master, challenge)


def external_authenticate_apdu(alg: Algorithm, key: bytes, challenge: bytes, key_id: int) -> bytes:
    """EXTERNAL AUTHENTICATE with E(K, challenge padded to a block)."""
    return apdus.external_authenticate(key_id, encrypt_ecb(alg, key, apdus.challenge_block(alg, challenge)))


def challenge(card, n: int = 8) -> bytes:
    return ok(card, apdus.get_challenge(n))


def authenticate(card, key_id: int, key: bytes, alg: Algorithm = Algorithm.TDES) -> int:
    return tx(card, external_authenticate_apdu(alg, key, challenge(card), key_id))[1]


def secured(card, cla: int, ins: int, p1: int, p2: int, body: bytes, key: bytes,
            alg: Algorithm = Algorithm.TDES) -> int:
    return tx(card, secured_apdu(cla, ins, p1, p2, body, alg, key, challenge(card)))[1]


def select_demo(card) -> bytes:
    return ok(card, "00A404000B" + b"SSCARD.DEMO".hex())
