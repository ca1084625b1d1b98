"""The financial application's commands the COS lacks (PBOC debit, JR/T 0025 subset).

GET PROCESSING OPTIONS answers format 1 (AIP ‖ AFL) with an AFL listing the ADF's record files
of SFI 1-10; GET DATA 9F17 gives the PIN try counter; VERIFY with P2 80 takes the EMV
plaintext PIN block. Each works only inside an application whose AID has the PBOC RID.
"""

from __future__ import annotations

from cardos import sw
from cardos.card import Command
from cardos.commands.pin import pin_matches
from cardos.files import KEY_PIN, ElementaryFile
from cardos.sw import CardError
from cardos.tlv import tlv

from .life import require_active, wrap

PBOC_RID = bytes.fromhex("A000000333")
# AIP: cardholder verification and terminal risk management supported, no offline data authentication.
AIP = bytes.fromhex("1800")
PIN_TRY_COUNTER = 0x9F17
EMV_PLAINTEXT_PIN = 0x80


def install(table: dict[int, Command]) -> None:
    """Add the PBOC debit commands to a COS command table."""
    table[0xA8] = Command(gpo, frozenset({0x80}))
    table[0xCA] = Command(get_data, frozenset({0x80}))
    wrap(table, 0x20, _emv_verify)


def _in_application(card) -> bool:
    spec = card.fs.spec(card.session.current_df)
    return getattr(spec, "name", b"").startswith(PBOC_RID)


def gpo(card, cmd) -> bytes:
    """GET PROCESSING OPTIONS: 80 ‖ len ‖ AIP ‖ AFL of the application's record files."""
    if not _in_application(card):
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "no PBOC application selected")
    if cmd.p1 or cmd.p2:
        raise CardError(sw.WRONG_P1P2)
    if not cmd.data or cmd.data[0] != 0x83:
        raise CardError(sw.WRONG_DATA, "GPO data is the command template 83")
    df = card.session.current_df
    afl = b""
    for _fid, path in sorted(card.fs.children(df).items()):
        spec = card.fs.spec(path)
        if isinstance(spec, ElementaryFile) and spec.RECORDS and 1 <= spec.sfi <= 10:
            n = len(card.fs.body(path))
            if n:
                afl += bytes([spec.sfi << 3, 1, n, 0])
    return tlv(0x80, AIP + afl)


def get_data(card, cmd) -> bytes:
    """GET DATA: 9F17, the PIN try counter of the application's PIN."""
    if (cmd.p1 << 8 | cmd.p2) != PIN_TRY_COUNTER or not _in_application(card):
        raise CardError(sw.REFERENCE_NOT_FOUND)
    _, pin = card.find_key(KEY_PIN, 0x00)
    return tlv(PIN_TRY_COUNTER, bytes([pin.tries_left]))


def _emv_verify(base):
    def verify(card, cmd):
        if cmd.p2 != EMV_PLAINTEXT_PIN or not _in_application(card):
            return base(card, cmd)
        if cmd.p1 != 0:
            raise CardError(sw.WRONG_P1P2)
        df, pin = card.find_key(KEY_PIN, 0x00)
        if not cmd.lc_present:
            raise CardError(sw.BLOCKED if pin.blocked else sw.tries_left(pin.tries_left))
        digits = _pin_block_digits(cmd.data)
        require_active(card)
        card.require(pin.use_right, "PIN use")
        card.try_credential(df, pin, pin_matches(pin.value, digits))
        card.raise_state(pin.next_state)
        return b""
    return verify


def _pin_block_digits(block: bytes) -> str:
    """Digits of an EMV plaintext PIN block: 2N ‖ N BCD digits ‖ F padding, 8 bytes."""
    if len(block) != 8 or block[0] >> 4 != 2 or not 4 <= (block[0] & 0x0F) <= 12:
        raise CardError(sw.WRONG_DATA, "not an EMV plaintext PIN block")
    n = block[0] & 0x0F
    text = block[1:].hex().upper()
    digits, pad = text[:n], text[n:]
    if not digits.isdigit() or set(pad) - {"F"}:
        raise CardError(sw.WRONG_DATA, "not an EMV plaintext PIN block")
    return digits
