"""The financial application's commands the COS lacks (PBOC 3.0 debit / EMV, JR/T 0025 subset).

GET PROCESSING OPTIONS answers format 1 (AIP ‖ AFL, both from the card's parameters) once per
selection; GENERATE AC and issuer authentication live in emv_ac, INTERNAL AUTHENTICATE (DDA) in
emv_dda; GET DATA gives the PIN try
counter, the ATC, the last online ATC and the log format; VERIFY with P2 80 takes the EMV
plaintext PIN block. Each works only inside an application whose AID has the PBOC RID.
"""

from __future__ import annotations

from cardos import sw
from cardos.command import Command
from cardos.commands.pin import pin_matches
from cardos.files import KEY_PIN
from cardos.sw import CardError
from cardos.tlv import tlv

from . import emv_ac, emv_data, emv_dda, emv_script, emv_state
from .life import require_active, wrap

PBOC_RID = bytes.fromhex("A000000333")
PIN_TRY_COUNTER, ATC, LAST_ONLINE_ATC, LOG_FORMAT = 0x9F17, 0x9F36, 0x9F13, 0x9F4F
EMV_PLAINTEXT_PIN = 0x80


def install(table: dict[int, Command]) -> None:
    """Add the PBOC debit commands to a COS command table."""
    table[0xA8] = Command(gpo, frozenset({0x80}))
    table[0xCA] = Command(get_data, frozenset({0x80}))
    table[0xAE] = Command(emv_ac.generate_ac, frozenset({0x80}))
    wrap(table, 0x20, _emv_verify)
    wrap(table, 0x82, emv_ac.external_authenticate)
    wrap(table, 0x88, emv_dda.internal_authenticate)
    wrap(table, 0xA4, _ends_transaction)
    wrap(table, 0xB2, _ber_templates)
    for ins in emv_script.SCRIPT_INS:
        wrap(table, ins, emv_script.issuer_script)


def _in_application(card) -> bool:
    spec = card.fs.spec(card.session.current_df)
    return getattr(spec, "name", b"").startswith(PBOC_RID)


def gpo(card, cmd) -> bytes:
    """GET PROCESSING OPTIONS: 80 ‖ len ‖ AIP ‖ AFL; a second one in the same selection is 6985."""
    if not _in_application(card):
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "no PBOC application selected")
    if cmd.p1 or cmd.p2:
        raise CardError(sw.WRONG_P1P2)
    if not cmd.data or cmd.data[0] != 0x83:
        raise CardError(sw.WRONG_DATA, "GPO data is the command template 83")
    if emv_ac.current(card) is not None:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "GPO once per selection")
    df = card.session.current_df
    aip, afl = emv_data.required(card, df, 0x82), emv_data.required(card, df, 0x94)
    emv_ac.begin(card)
    return tlv(0x80, aip + afl)


def get_data(card, cmd) -> bytes:
    """GET DATA: 9F17 PIN tries, 9F36 ATC, 9F13 last online ATC, 9F4F log format."""
    tag = cmd.p1 << 8 | cmd.p2
    if not _in_application(card):
        raise CardError(sw.REFERENCE_NOT_FOUND)
    df = card.session.current_df
    if tag == PIN_TRY_COUNTER:
        _, pin = card.find_key(KEY_PIN, 0x00)
        return tlv(tag, bytes([pin.tries_left]))
    if tag in (ATC, LAST_ONLINE_ATC):
        counters = emv_state.load(card, df)
        value = counters.atc if tag == ATC else counters.last_online_atc
        return tlv(tag, value.to_bytes(2, "big"))
    if tag == LOG_FORMAT:
        value = emv_data.data_object(card, df, LOG_FORMAT)
        if value is not None:
            return tlv(tag, value)
    raise CardError(sw.REFERENCE_NOT_FOUND)


def _ber_templates(base):
    """Record files keep SIMPLE-TLV (one length byte); an EMV template of 128 bytes or more reads as BER 70 81 xx."""
    def read_record(card, cmd):
        data = base(card, cmd)
        if len(data) > 0x81 and data[0] == 0x70 and data[1] == len(data) - 2 and _in_application(card):
            return data[:1] + b"\x81" + data[1:]
        return data
    return read_record


def _ends_transaction(base):
    def select(card, cmd):
        card.session.emv = None
        return base(card, cmd)
    return select


def _emv_verify(base):
    def verify(card, cmd):
        if cmd.p2 != EMV_PLAINTEXT_PIN or not _in_application(card):
            return base(card, cmd)
        if cmd.p1 != 0:
            raise CardError(sw.WRONG_P1P2)
        df, pin = card.find_key(KEY_PIN, 0x00)
        if not cmd.lc_present:
            raise CardError(sw.BLOCKED if pin.blocked else sw.tries_left(pin.tries_left))
        digits = emv_data.pin_block_digits(cmd.data)
        require_active(card)
        card.require(pin.use_right, "PIN use")
        tx = emv_ac.current(card)
        if tx is not None:
            tx.pin_tried, tx.pin_failed = True, True
        card.try_credential(df, pin, pin_matches(pin.value, digits))
        if tx is not None:
            tx.pin_failed = False
        card.raise_state(pin.next_state)
        return b""
    return verify
