"""GENERATE AC and issuer authentication of the debit application (EMV 4.3 Book 3 §6.5.5, §6.5.4).

The card's risk rules [ours, after the common core definitions]: an AAC when the terminal asks
one; an ARQC when it asks one, or asks a TC while the last online transaction failed issuer
authentication or never finished, the consecutive offline count reached the lower limit (9F14),
or the amount passes the single offline limit (9F5D); a TC otherwise. In the second GENERATE AC,
a TC only when the terminal asks one, the authorisation response code approves and issuer
authentication did not fail. Answers use format 1: 80 ‖ CID ‖ ATC ‖ AC ‖ IAD.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cardos import sw
from cardos.files import KEY_DES_ENC
from cardos.sw import CardError
from cardos.tlv import parse_dol, tlv

from . import emv_crypto, emv_data, emv_state
from .emv_state import ISSUER_AUTH_FAILED, ONLINE_UNFINISHED

AAC, TC, ARQC = 0x00, 0x40, 0x80
AC_KEY_ID = 0x01
# The common core's minimum data for the cryptogram, in order, from the CDOLs.
AC_TERMINAL_TAGS = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37)
APPROVED_ARCS = (b"00", b"Y3")


@dataclass
class Transaction:
    """One transaction of one selection (RAM): lost at reset and at any SELECT."""

    df: tuple
    atc: int | None = None
    first: int | None = None
    second: int | None = None
    terminal: dict | None = None
    arqc: bytes = b""
    issuer_auth: bool | None = None
    pin_tried: bool = False
    pin_failed: bool = False
    offline_limit_hit: bool = False


def current(card) -> Transaction | None:
    tx = getattr(card.session, "emv", None)
    return tx if tx is not None and tx.df == card.session.current_df else None


def begin(card) -> Transaction:
    tx = Transaction(card.session.current_df)
    card.session.emv = tx
    return tx


def generate_ac(card, cmd) -> bytes:
    """GENERATE AC: the first after GPO, the second only after an ARQC; 6985 otherwise."""
    tx = current(card)
    if tx is None:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "GET PROCESSING OPTIONS first")
    asked = cmd.p1 & 0xC0
    if cmd.p2 or asked == 0xC0:
        raise CardError(sw.WRONG_P1P2)
    if tx.first is None:
        return _first(card, tx, asked, cmd.data)
    if tx.first == ARQC and tx.second is None:
        return _second(card, tx, asked, cmd.data)
    raise CardError(sw.CONDITIONS_NOT_SATISFIED, "the transaction has its cryptograms")


def _first(card, tx: Transaction, asked: int, data: bytes) -> bytes:
    terminal = emv_data.split_dol(emv_data.required(card, tx.df, 0x8C), data)
    counters = emv_state.load(card, tx.df)
    cid = asked if asked != TC else _offline_decision(card, tx, terminal, counters)
    flags = counters.flags | ONLINE_UNFINISHED if cid == ARQC else counters.flags
    offline = counters.offline_count + 1 if cid == TC else counters.offline_count
    # The new ATC is committed before the cryptogram exists: a tear from here on burns it.
    counters = emv_state.next_atc(card, tx.df, flags=flags, offline_count=offline)
    tx.atc, tx.first, tx.terminal = counters.atc, cid, terminal
    answer = _answer(card, tx, cid, terminal)
    if cid == ARQC:
        tx.arqc = answer[3:11]
    if cid == TC:
        _log(card, tx, terminal)
    return tlv(0x80, answer)


def _offline_decision(card, tx: Transaction, terminal: dict, counters) -> int:
    if counters.flags & (ISSUER_AUTH_FAILED | ONLINE_UNFINISHED):
        return ARQC
    lower = emv_data.data_object(card, tx.df, 0x9F14)
    if lower is not None and counters.offline_count >= lower[0]:
        tx.offline_limit_hit = True
        return ARQC
    limit = emv_data.data_object(card, tx.df, 0x9F5D)
    amount = terminal.get(0x9F02)
    if limit is not None and amount is not None and int(amount.hex()) > int(limit.hex()):
        return ARQC
    return TC


def _second(card, tx: Transaction, asked: int, data: bytes) -> bytes:
    if asked == ARQC:
        raise CardError(sw.WRONG_P1P2, "the second GENERATE AC asks a TC or an AAC")
    cdol2 = emv_data.split_dol(emv_data.required(card, tx.df, 0x8D), data)
    arc = cdol2.get(0x8A, b"")
    issuer_data = cdol2.get(0x91, b"")
    if tx.issuer_auth is None and issuer_data.strip(b"\x00"):
        tx.issuer_auth = _check_arpc(card, tx, issuer_data)
    approved = asked == TC and arc in APPROVED_ARCS and tx.issuer_auth is not False
    cid = TC if approved else AAC
    counters = emv_state.load(card, tx.df)
    flags = counters.flags & ~ONLINE_UNFINISHED
    if tx.issuer_auth is False:
        flags |= ISSUER_AUTH_FAILED
    if approved and tx.issuer_auth:
        counters = replace(counters, last_online_atc=tx.atc, offline_count=0)
        flags &= ~ISSUER_AUTH_FAILED
    emv_state.save(card, tx.df, replace(counters, flags=flags))
    tx.second = cid
    terminal = {**tx.terminal, **{t: v for t, v in cdol2.items() if t in (0x95, 0x9F37)}}
    answer = _answer(card, tx, cid, terminal)
    if cid == TC:
        _log(card, tx, terminal)
    return tlv(0x80, answer)


def _answer(card, tx: Transaction, cid: int, terminal: dict) -> bytes:
    aip = emv_data.required(card, tx.df, 0x82)
    cvr = _cvr(tx)
    missing = [f"{t:X}" for t in AC_TERMINAL_TAGS if t not in terminal]
    if missing:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, f"the CDOL lacks {', '.join(missing)}")
    data = b"".join(terminal[t] for t in AC_TERMINAL_TAGS) + aip + tx.atc.to_bytes(2, "big") + cvr
    ac = emv_crypto.application_cryptogram(_ac_key(card), tx.atc, data)
    return bytes([cid]) + tx.atc.to_bytes(2, "big") + ac + issuer_application_data(cvr)


def issuer_application_data(cvr: bytes) -> bytes:
    """[ours, PBOC-shaped] 9F10: length 07, key index 01, cryptogram version 01, CVR (4 bytes)."""
    return bytes([0x07, 0x01, 0x01]) + cvr


def _cvr(tx: Transaction) -> bytes:
    """[ours] CVR: 03 ‖ AC types and checks ‖ history ‖ 00."""
    second = {None: 0x80, AAC: 0x00, TC: 0x40}.get(tx.second, 0x80)
    first = {AAC: 0x00, TC: 0x10, ARQC: 0x20}[tx.first]
    b1 = second | first | (0x08 if tx.issuer_auth is False else 0) | (0x04 if tx.pin_tried else 0) \
        | (0x02 if tx.pin_failed else 0)
    b2 = 0x20 if tx.offline_limit_hit else 0
    return bytes([0x03, b1, b2, 0x00])


def _ac_key(card) -> bytes:
    _, key = card.find_key(KEY_DES_ENC, AC_KEY_ID)
    if len(key.value) != 16 or key.algorithm.value != "3des":
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "the AC key is not a 3DES key")
    return key.value


def _check_arpc(card, tx: Transaction, issuer_data: bytes) -> bool:
    if len(issuer_data) < 10:
        return False
    return emv_crypto.arpc_matches(_ac_key(card), tx.atc, tx.arqc, issuer_data[8:10], issuer_data[:8])


def external_authenticate(base):
    """EXTERNAL AUTHENTICATE of issuer authentication data (91) after an ARQC; else the COS's."""
    def handler(card, cmd):
        tx = current(card)
        if tx is None or tx.first is None or cmd.cla != 0x00:
            return base(card, cmd)
        if tx.first != ARQC or tx.second is not None or tx.issuer_auth is not None:
            raise CardError(sw.CONDITIONS_NOT_SATISFIED, "issuer authentication once, between the two ACs")
        if cmd.p1 or cmd.p2:
            raise CardError(sw.WRONG_P1P2)
        if not 8 < len(cmd.data) <= 16:
            raise CardError(sw.WRONG_LENGTH, "issuer authentication data is 10..16 bytes")
        tx.issuer_auth = _check_arpc(card, tx, cmd.data)
        if not tx.issuer_auth:
            raise CardError(sw.AUTHENTICATION_FAILED, "ARPC wrong")
        return b""
    return handler


def _log(card, tx: Transaction, terminal: dict) -> None:
    """A log entry in the card's own log format (9F4F): terminal data, the ATC and the CID."""
    log_format = emv_data.data_object(card, tx.df, 0x9F4F)
    if log_format is None:
        return
    own = {0x9F36: tx.atc.to_bytes(2, "big"), 0x9F27: bytes([tx.second if tx.second is not None else tx.first])}
    entry = b"".join(own.get(t, terminal.get(t, b"")).rjust(n, b"\x00")[:n]
                     for t, n in parse_dol(log_format))
    emv_state.append_log(card, tx.df, entry)
