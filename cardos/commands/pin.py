"""VERIFY, CHANGE PIN, RELOAD PIN and UNBLOCK PIN (spec §3, §4)."""

from __future__ import annotations

import hmac

from .. import sw
from ..apdu import Apdu
from ..crypto import mac4, mac_equal, unseal
from ..files import KEY_PIN, KEY_PIN_RELOAD, KEY_PIN_UNBLOCK, pin_digits
from ..sw import CardError

MIN_PIN_BYTES, MAX_PIN_BYTES = 2, 6


def _pin(card, pin_id: int):
    df, rec = card.find_key(KEY_PIN, pin_id)
    card.require(rec.use_right, "PIN use")
    if rec.blocked:
        raise CardError(sw.BLOCKED)
    return df, rec


def _digits(value: bytes, what: str) -> str:
    if not 1 <= len(value) <= 8:
        raise CardError(sw.WRONG_LENGTH, f"{what} must be 1..8 bytes")
    digits = pin_digits(value)
    if digits is None:
        raise CardError(sw.WRONG_DATA, f"{what} is not BCD")
    return digits


def _new_pin(value: bytes) -> bytes:
    if not MIN_PIN_BYTES <= len(value) <= MAX_PIN_BYTES or pin_digits(value) is None:
        raise CardError(sw.WRONG_DATA, "new PIN must be 4..12 BCD digits, F-padded")
    return value


def pin_matches(stored: bytes, offered: str) -> bool:
    """True when an F-padded BCD PIN holds the offered digits (compared in constant time)."""
    return hmac.compare_digest(pin_digits(stored).encode(), offered.encode())


def verify(card, cmd: Apdu) -> bytes:
    """VERIFY: compare the PIN (try counter decremented first); without data, report tries left."""
    if cmd.p1 != 0:
        raise CardError(sw.WRONG_P1P2)
    df, rec = _pin(card, cmd.p2)
    if not cmd.lc_present:
        raise CardError(sw.tries_left(rec.tries_left))
    offered = _digits(cmd.data, "PIN")
    card.try_credential(df, rec, pin_matches(rec.value, offered))
    card.raise_state(rec.next_state)
    return b""


def change_or_reload(card, cmd: Apdu) -> bytes:
    """80 5E: P1 01 CHANGE PIN (old ‖ FF ‖ new), P1 00 RELOAD PIN (new ‖ MAC under the reload key)."""
    if cmd.p1 == 0x01:
        return _change(card, cmd)
    if cmd.p1 == 0x00:
        return _reload(card, cmd)
    raise CardError(sw.WRONG_P1P2)


def _change(card, cmd: Apdu) -> bytes:
    old, sep, new = cmd.data.partition(b"\xff")
    if not sep:
        raise CardError(sw.WRONG_DATA, "CHANGE PIN data is old ‖ FF ‖ new")
    offered = _digits(old, "old PIN")
    new = _new_pin(new)
    df, rec = _pin(card, cmd.p2)
    card.try_credential(df, rec, pin_matches(rec.value, offered))
    card.fs.put_key(df, card.fs.key(df, KEY_PIN, rec.id).with_value(new))
    return b""


def _reload(card, cmd: Apdu) -> bytes:
    if len(cmd.data) < MIN_PIN_BYTES + 4:
        raise CardError(sw.WRONG_LENGTH, "RELOAD PIN data is new PIN ‖ MAC4")
    new, mac = _new_pin(cmd.data[:-4]), cmd.data[-4:]
    df, rec = card.find_key(KEY_PIN, cmd.p2)
    kdf, key = card.find_key(KEY_PIN_RELOAD, cmd.p2)
    # FMCOS reload MAC: over the new PIN alone, initial vector zero (no challenge).
    expected = mac4(key.algorithm, key.value, b"", new)
    card.try_credential(kdf, key, mac_equal(mac, expected), card.config.wrong_mac_sw)
    card.fs.put_key(df, rec.with_value(new).with_tries(rec.max_tries))
    return b""


def unblock(card, cmd: Apdu) -> bytes:
    """UNBLOCK PIN (84 24): MAC4 alone resets the try counter; enc(new) ‖ MAC4 also sets a new PIN."""
    if cmd.p1 != 0:
        raise CardError(sw.WRONG_P1P2)
    df, rec = card.find_key(KEY_PIN, cmd.p2)
    body, _, key = card.check_mac(cmd, KEY_PIN_UNBLOCK, cmd.p2)
    if body:
        try:
            value = _new_pin(unseal(key.algorithm, key.value, body))
        except ValueError:
            raise CardError(sw.WRONG_DATA, "new PIN does not decrypt") from None
        rec = rec.with_value(value)
    card.fs.put_key(df, rec.with_tries(rec.max_tries))
    return b""
