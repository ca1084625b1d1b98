"""Terminal-side helpers the tests share: send hex, check status words, authenticate, MAC."""

from __future__ import annotations

from cardos.apdu import split_response
from cardos.crypto import Algorithm
from personalize import fmcos


def tx(card, apdu: str | bytes) -> tuple[bytes, int]:
    raw = bytes.fromhex(apdu.replace(" ", "")) if isinstance(apdu, str) else apdu
    return split_response(card.transmit(raw))


def sw(card, apdu: str | bytes) -> int:
    return tx(card, apdu)[1]


def ok(card, apdu: str | bytes) -> bytes:
    data, status = tx(card, apdu)
    assert status == 0x9000, f"{apdu if isinstance(apdu, str) else apdu.hex()} -> {status:04X}"
    return data


def challenge(card, n: int = 8) -> bytes:
    return ok(card, fmcos.get_challenge(n))


def authenticate(card, key_id: int, key: bytes, alg: Algorithm = Algorithm.TDES) -> int:
    return tx(card, fmcos.external_authenticate(alg, key, challenge(card), key_id))[1]


def secured(card, cla: int, ins: int, p1: int, p2: int, body: bytes, key: bytes,
            alg: Algorithm = Algorithm.TDES) -> int:
    return tx(card, fmcos.secured(cla, ins, p1, p2, body, alg, key, challenge(card)))[1]


def select_demo(card) -> bytes:
    return ok(card, "00A404000B" + b"SSCARD.DEMO".hex())
