"""Dynamic data authentication by the debit application: INTERNAL AUTHENTICATE (EMV 4.3 Book 2 §6.5,
Book 3 §6.5.9).

The card signs the signed dynamic application data (format 05, SHA-1) with its own RSA key, held
by the card OS as two key records (3B/01 the modulus, 3B/02 the private exponent): its ICC
dynamic data is a fresh 8-byte ICC dynamic number, and the hash covers the terminal's data as
the card's DDOL (9F49, else the default 9F3704) lays it out. The answer is format 2, 77 {9F4B}.
[ours, as most cards] Only after GET PROCESSING OPTIONS and before the first GENERATE AC; in a DF
without an ICC key the command stays the COS's own.
"""

from __future__ import annotations

import hashlib

from cardos import sw
from cardos.files import KEY_RSA_PART
from cardos.sw import CardError
from cardos.tlv import tlv

from . import emv_ac, emv_data

DDOL, DEFAULT_DDOL = 0x9F49, bytes.fromhex("9F3704")
SIGNED_DYNAMIC_DATA, FORMAT_05, SHA1 = 0x9F4B, 0x05, 0x01
DYNAMIC_NUMBER_BYTES = 8


def internal_authenticate(base):
    """INTERNAL AUTHENTICATE 00 88 00 00 with the DDOL data: 77 {9F4B signed dynamic application data}."""
    def handler(card, cmd):
        df = card.session.current_df
        modulus, exponent = card.fs.key(df, KEY_RSA_PART, 0x01), card.fs.key(df, KEY_RSA_PART, 0x02)
        if modulus is None or exponent is None:
            return base(card, cmd)
        if cmd.p1 or cmd.p2:
            raise CardError(sw.WRONG_P1P2)
        if not cmd.lc_present:
            raise CardError(sw.WRONG_LENGTH, "INTERNAL AUTHENTICATE carries the DDOL data")
        tx = emv_ac.current(card)
        if tx is None or tx.first is not None:
            raise CardError(sw.CONDITIONS_NOT_SATISFIED, "DDA comes after GPO and before GENERATE AC")
        ddol = emv_data.data_object(card, df, DDOL) or DEFAULT_DDOL
        emv_data.split_dol(ddol, cmd.data)          # 6700 unless laid out as the DDOL says
        return tlv(0x77, tlv(SIGNED_DYNAMIC_DATA, _sign(card, modulus.value, exponent.value, cmd.data)))
    return handler


def _sign(card, modulus: bytes, exponent: bytes, terminal_data: bytes) -> bytes:
    """Book 2 table 17: 6A ‖ 05 ‖ 01 ‖ L_DD ‖ ICC dynamic data ‖ BB… ‖ SHA-1 ‖ BC, the RSA private operation."""
    n = int.from_bytes(modulus, "big")
    size = (n.bit_length() + 7) // 8
    dynamic = bytes([DYNAMIC_NUMBER_BYTES]) + card.rng(DYNAMIC_NUMBER_BYTES)
    head = bytes([FORMAT_05, SHA1, len(dynamic)]) + dynamic + b"\xbb" * (size - len(dynamic) - 25)
    block = b"\x6a" + head + hashlib.sha1(head + terminal_data).digest() + b"\xbc"
    return pow(int.from_bytes(block, "big"), int.from_bytes(exponent, "big"), n).to_bytes(size, "big")
