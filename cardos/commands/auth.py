"""GET CHALLENGE, EXTERNAL AUTHENTICATE and INTERNAL AUTHENTICATE (spec §3)."""

from __future__ import annotations

from .. import sw
from ..apdu import Apdu
from ..crypto import Algorithm, diversify, encrypt_ecb, mac_equal
from ..files import KEY_EXTERNAL, KEY_INTERNAL
from ..sw import CardError

CHALLENGE_LENGTHS = (4, 8, 16)


def get_challenge(card, cmd: Apdu) -> bytes:
    """GET CHALLENGE: a fresh random of 4, 8 or 16 bytes; it replaces any earlier one."""
    if cmd.p1 or cmd.p2:
        raise CardError(sw.WRONG_P1P2)
    if cmd.lc_present or cmd.le not in CHALLENGE_LENGTHS:
        raise CardError(sw.WRONG_LENGTH, "challenge length must be 4, 8 or 16")
    card.session.challenge = card.rng(cmd.le)
    return card.session.challenge


def _block(alg: Algorithm, data: bytes) -> bytes:
    return (data + bytes(alg.block))[: alg.block] if len(data) <= alg.block else data


def external_authenticate(card, cmd: Apdu) -> bytes:
    """EXTERNAL AUTHENTICATE: the terminal proves the key by encrypting the card's challenge."""
    if cmd.p1 != 0:
        raise CardError(sw.WRONG_P1P2)
    df, key = card.find_key(KEY_EXTERNAL, cmd.p2)
    card.require(key.use_right, "key use")
    if key.blocked:
        raise CardError(sw.BLOCKED)
    if len(cmd.data) not in (8, 16):
        raise CardError(sw.WRONG_LENGTH, "cryptogram must be 8 or 16 bytes")
    block = _block(key.algorithm, card.take_challenge())
    expected = encrypt_ecb(key.algorithm, key.value, block)
    if key.algorithm is not Algorithm.SM4 and len(cmd.data) == 16:
        # PSAM style: E(K, challenge) ‖ challenge.
        expected += block
    if len(cmd.data) != len(expected):
        raise CardError(sw.WRONG_LENGTH, f"this key takes a {len(expected)}-byte cryptogram")
    card.try_credential(df, key, mac_equal(cmd.data, expected))
    card.raise_state(key.next_state)
    return b""


def internal_authenticate(card, cmd: Apdu) -> bytes:
    """INTERNAL AUTHENTICATE: the card proves itself; Lc 08 E(K, data), Lc 10 E(E(K, process), source)."""
    if cmd.p1 != 0:
        raise CardError(sw.WRONG_P1P2)
    _, key = card.find_key(KEY_INTERNAL, cmd.p2)
    card.require(key.use_right, "key use")
    alg = key.algorithm
    if len(cmd.data) == 8:
        return encrypt_ecb(alg, key.value, _block(alg, cmd.data))
    if len(cmd.data) == 16:
        process, source = cmd.data[:8], cmd.data[8:]
        session_key = diversify(alg, key.value, process)
        return encrypt_ecb(alg, session_key, _block(alg, source))
    raise CardError(sw.WRONG_LENGTH, "data must be 8 or 16 bytes")
