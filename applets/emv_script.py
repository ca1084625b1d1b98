"""Issuer scripts sent within an online transaction (EMV 4.3 Book 2 §9.2-9.3, Book 3 §10.10).

After the card has given an ARQC, a command with CLA 84 of the script set carries a 4-byte
MAC under the script integrity session key (card key 32/01, common session key derivation with
R = ARQC) over CLA INS P1 P2 Lc ‖ ATC ‖ ARQC ‖ data; a new PIN comes as an ISO 9564 format 2
PIN block enciphered under the confidentiality session key (card key 30/02, R = ARQC). Outside
such a transaction the same commands keep the COS's line protection, as the bank counter uses it.
"""

from __future__ import annotations

from cardos import sw
from cardos.command import CARD_BLOCKED
from cardos.crypto import Algorithm, decrypt_ecb, mac_equal, pad80, retail_mac
from cardos.files import KEY_DES_ENC, KEY_DES_MAC, KEY_PIN
from cardos.filesystem import AppState
from cardos.sw import CardError

from . import emv_ac, emv_data
from .emv_crypto import common_session_key

SCRIPT_INS = (0x1E, 0x16, 0x24)   # APPLICATION BLOCK, CARD BLOCK, PIN CHANGE/UNBLOCK
MAC_KEY_ID, ENC_KEY_ID = 0x01, 0x02


def issuer_script(base):
    """A script command under the transaction's session MAC key, else the COS's own handler."""
    def handler(card, cmd):
        tx = emv_ac.current(card)
        if tx is None or not tx.arqc or cmd.cla != 0x84:
            return base(card, cmd)
        data = _verified(card, tx, cmd)
        if cmd.ins == 0x1E:
            return _application_block(card, cmd, tx)
        if cmd.ins == 0x16:
            if cmd.p1 or cmd.p2 or data:
                raise CardError(sw.WRONG_P1P2)
            card.store.put(CARD_BLOCKED, True)
            return b""
        return _pin_change_unblock(card, cmd, tx, data)
    return handler


def _session(card, key_type: int, key_id: int, tx) -> bytes:
    _, key = card.find_key(key_type, key_id)
    if key.algorithm is not Algorithm.TDES:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "script keys are 3DES keys")
    return common_session_key(key.value, tx.arqc)


def _verified(card, tx, cmd) -> bytes:
    if len(cmd.data) < 4:
        raise CardError(sw.WRONG_LENGTH, "a script command carries a MAC")
    body, mac = cmd.data[:-4], cmd.data[-4:]
    signed = cmd.header + bytes([len(cmd.data)]) + tx.atc.to_bytes(2, "big") + tx.arqc + body
    expected = retail_mac(_session(card, KEY_DES_MAC, MAC_KEY_ID, tx), bytes(8), pad80(signed, 8))[:4]
    if not mac_equal(mac, expected):
        raise CardError(sw.MAC_WRONG, "script MAC")
    return body


def _application_block(card, cmd, tx) -> bytes:
    if cmd.p1 or cmd.p2 not in (0x00, 0x01):
        raise CardError(sw.WRONG_P1P2)
    card.fs.set_app_state(tx.df, AppState.LOCKED if cmd.p2 else AppState.BLOCKED)
    return b""


def _pin_change_unblock(card, cmd, tx, data: bytes) -> bytes:
    """P2 00: reset the try counter; P2 02: set the PIN from the enciphered block, counter reset too."""
    if cmd.p1 or cmd.p2 not in (0x00, 0x02):
        raise CardError(sw.WRONG_P1P2)
    df, pin = card.find_key(KEY_PIN, 0x00)
    if cmd.p2 == 0x02:
        if len(data) != 8:
            raise CardError(sw.WRONG_LENGTH, "an enciphered PIN block is 8 bytes")
        block = decrypt_ecb(Algorithm.TDES, _session(card, KEY_DES_ENC, ENC_KEY_ID, tx), data)
        digits = emv_data.pin_block_digits(block)
        pin = pin.with_value(bytes.fromhex(digits + ("F" if len(digits) % 2 else "")))
    elif data:
        raise CardError(sw.WRONG_LENGTH, "PIN UNBLOCK carries only the MAC")
    card.fs.put_key(df, pin.with_tries(pin.max_tries))
    return b""
