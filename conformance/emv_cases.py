"""Conformance cases of the debit application as EMV terminals use it (EMV 4.3 Books 1-3, JR/T 0025)."""

from __future__ import annotations

from cardos.apdu import build
from cardos.crypto import Algorithm
from cardos.tlv import TlvError, find, parse

from .registry import case, check
from .context import CaseFailure, CaseSkipped

PSE, PPSE = b"1PAY.SYS.DDF01", b"2PAY.SYS.DDF01"
AAC, TC, ARQC = 0x00, 0x40, 0x80
NAMES = {AAC: "AAC", TC: "TC", ARQC: "ARQC"}


def _tlv(data: bytes, what: str) -> dict[int, bytes]:
    """Every primitive object of a BER-TLV run, templates opened; a failure names what was parsed."""
    out: dict[int, bytes] = {}
    try:
        for tag, value in parse(data):
            if (tag >> 8 if tag > 0xFF else tag) & 0x20:
                out.update(_tlv(value, what))
            else:
                out[tag] = value
    except TlvError as e:
        raise CaseFailure(f"{what} is not BER-TLV: {e}") from None
    return out


def _start(ctx) -> tuple[bytes, bytes]:
    """Select the application and GPO: its AIP and AFL."""
    ctx.select_role("financial")
    gpo = ctx.expect("80A8000002830000", 0x9000, note="GET PROCESSING OPTIONS")
    body = find(gpo, 0x80) or b""
    check(len(body) >= 6 and (len(body) - 2) % 4 == 0, f"GPO answer {gpo.hex().upper()} is not format 1 AIP ‖ AFL")
    return body[:2], body[2:]


def _records(ctx, afl: bytes) -> list[tuple[str, bytes]]:
    out = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        check(1 <= sfi <= 30 and afl[i] & 7 == 0 and 1 <= first <= last and oda <= last - first + 1,
              f"AFL entry {afl[i:i + 4].hex().upper()} is malformed (Book 3 §10.2)")
        for n in range(first, last + 1):
            rec = ctx.expect(build(0x00, 0xB2, n, (sfi << 3) | 4, le=0), 0x9000, note=f"READ RECORD SFI {sfi} record {n}")
            check(rec[:1] == b"\x70", f"SFI {sfi} record {n} is not an EMV template 70")
            out.append((f"SFI {sfi} record {n}", rec))
    return out


def _cdol_data(dol: bytes, values: dict[int, bytes]) -> bytes:
    out, i = b"", 0
    while i < len(dol):
        tag = dol[i]
        i += 1
        if tag & 0x1F == 0x1F:
            tag, i = (tag << 8) | dol[i], i + 1
        n = dol[i]
        i += 1
        out += values.get(tag, b"").rjust(n, b"\x00")[:n]
    return out


TERMINAL = {0x9F02: bytes.fromhex("000000000100"), 0x9F03: bytes(6), 0x9F1A: bytes.fromhex("0156"),
            0x95: bytes(5), 0x5F2A: bytes.fromhex("0156"), 0x9A: bytes.fromhex("260101"), 0x9C: b"\x00",
            0x9F37: bytes.fromhex("12345678"), 0x9F21: bytes.fromhex("120000"), 0x8A: b"Z3"}


def _gac(ctx, p1: int, dol: bytes, note: str, *sws: int) -> tuple[int, int]:
    answer = ctx.expect(build(0x80, 0xAE, p1, 0x00, _cdol_data(dol, TERMINAL), 0), *(sws or (0x9000,)), note=note)
    if not answer:
        return -1, -1
    body = find(answer, 0x80) if answer[:1] == b"\x80" else None
    if body is None:
        fields = _tlv(answer, note)
        body = fields.get(0x9F27, b"\xff") + fields.get(0x9F36, b"") + fields.get(0x9F26, b"")
    check(len(body) >= 11, f"{note}: the answer holds no CID ‖ ATC ‖ cryptogram")
    return body[0] & 0xC0, int.from_bytes(body[1:3], "big")


def _need_3des(ctx) -> None:
    if ctx.profile.algorithm is not Algorithm.TDES:
        raise CaseSkipped("EMV cryptograms are implemented for 3DES card keys only")


@case("EMV-01", "FCI templates: PSE 6F{84, A5{88}}, ADF 6F{84 AID, A5{50}}, PPSE BF0C{61{4F}}", "EMV Book 1 §11.3.4")
def emv_fci(ctx):
    pse = _tlv(ctx.expect(build(0x00, 0xA4, 0x04, 0x00, PSE, 0), 0x9000, note="select PSE"), "PSE FCI")
    check(pse.get(0x84) == PSE, "the PSE FCI's 84 is not 1PAY.SYS.DDF01")
    check(len(pse.get(0x88, b"")) == 1 and 1 <= pse[0x88][0] <= 10, "the PSE FCI lacks A5/88, the directory's SFI")
    entry = ctx.expect(build(0x00, 0xB2, 0x01, (pse[0x88][0] << 3) | 4, le=0), 0x9000, note="directory record 1")
    aid = _tlv(entry, "directory record").get(0x4F)
    check(aid is not None and 5 <= len(aid) <= 16, "the directory record names no ADF (61/4F)")
    fci = _tlv(ctx.expect(build(0x00, 0xA4, 0x04, 0x00, aid, 0), 0x9000, note="select the ADF"), "ADF FCI")
    check(fci.get(0x84) == aid, "the ADF's FCI 84 is not its AID")
    check(0x50 in fci, "the ADF's FCI has no application label (50)")
    ppse = ctx.expect(build(0x00, 0xA4, 0x04, 0x00, PPSE, 0), 0x9000, note="select PPSE")
    check(find(ppse, 0xBF0C) is not None and find(ppse, 0x4F) == aid, "the PPSE's BF0C/61/4F does not name the ADF")


@case("EMV-02", "AFL consistent: every record a template 70, no data object twice, mandatory ones present",
      "EMV Book 3 §10.2, §7.2")
def emv_afl(ctx):
    aip, afl = _start(ctx)
    seen: dict[int, str] = {}
    for where, rec in _records(ctx, afl):
        for tag in _tlv(rec, where):
            check(tag not in seen, f"tag {tag:X} in {where} and again in {seen.get(tag)}: a terminal terminates")
            seen[tag] = where
    missing = [f"{t:X}" for t in (0x5A, 0x5F24, 0x8C, 0x8D) if t not in seen]
    check(not missing, f"mandatory data objects missing from the AFL's records: {', '.join(missing)}")
    if aip[0] & 0x10:
        check(0x8E in seen, "the AIP claims cardholder verification and there is no CVM list (8E)")


@case("EMV-03", "Offline data authentication the AIP claims has its data", "EMV Book 2 §5-6, Book 3 §10.3")
def emv_oda(ctx):
    aip, afl = _start(ctx)
    if not aip[0] & 0x60:
        raise CaseSkipped("the AIP claims neither SDA nor DDA")
    data: dict[int, bytes] = {}
    records = _records(ctx, afl)
    for where, rec in records:
        data.update(_tlv(rec, where))
    need = {0x8F, 0x90, 0x9F32} | ({0x93} if aip[0] & 0x40 else set()) | ({0x9F46, 0x9F47} if aip[0] & 0x20 else set())
    missing = sorted(need - set(data))
    check(not missing, f"ODA data missing: {', '.join(f'{t:X}' for t in missing)}")
    if not aip[0] & 0x40 or ctx.keys is None or not hasattr(ctx.keys, "rsa_public"):
        return
    from personalize.emv_keys import CA_KEY
    from terminal.emv import sda_failure
    why = sda_failure(ctx.keys.rsa_public(CA_KEY), data, _static_data(records, afl, aip, data))
    check(why is None, f"SDA does not verify under the key file's CA key: {why}")


def _static_data(records: list[tuple[str, bytes]], afl: bytes, aip: bytes, data: dict[int, bytes]) -> bytes:
    """The static data to be authenticated: the AFL's ODA records' templates, then the 9F4A tags (AIP)."""
    static = b""
    for i in range(0, len(afl), 4):
        sfi, first, oda = afl[i] >> 3, afl[i + 1], afl[i + 3]
        for n in range(first, first + oda):
            static += find(dict(records)[f"SFI {sfi} record {n}"], 0x70) or b""
    return static + (aip if data.get(0x9F4A, b"") == b"\x82" else b"")


@case("EMV-06", "DDA: INTERNAL AUTHENTICATE's signature verifies under the ICC key the issuer certifies, "
      "and another unpredictable number gets another signature", "EMV Book 2 §6.3-6.5, Book 3 §6.5.9")
def emv_dda(ctx):
    import datetime as dt

    from personalize.emv_keys import CA_KEY
    from terminal.emv import DEFAULT_DDOL, TerminalError, dynamic_number, icc_public_key, issuer_public_key
    aip, afl = _start(ctx)
    if not aip[0] & 0x20:
        raise CaseSkipped("the AIP claims no DDA")
    if ctx.keys is None or not hasattr(ctx.keys, "rsa_public"):
        raise CaseSkipped("needs the key file (--keys): its CA public key")
    records = _records(ctx, afl)
    data: dict[int, bytes] = {}
    for where, rec in records:
        data.update(_tlv(rec, where))
    try:
        issuer = issuer_public_key(ctx.keys.rsa_public(CA_KEY), data)
        icc = icc_public_key(issuer, data, _static_data(records, afl, aip, data), dt.date.today())
    except TerminalError as e:
        raise CaseFailure(f"the ICC public key does not recover: {e}") from None
    ddol, signatures = data.get(0x9F49) or DEFAULT_DDOL, []
    for un in ("12345678", "9ABCDEF0"):
        payload = _cdol_data(ddol, {**TERMINAL, 0x9F37: bytes.fromhex(un)})
        note = f"INTERNAL AUTHENTICATE, unpredictable number {un}"
        answer = ctx.expect(build(0x00, 0x88, 0x00, 0x00, payload, 0), 0x9000, note=note)
        sdad = find(answer, 0x80) if answer[:1] == b"\x80" else _tlv(answer, note).get(0x9F4B, b"")
        try:
            dynamic_number(icc, sdad or b"", payload)
        except TerminalError as e:
            raise CaseFailure(f"{note}: {e}") from None
        signatures.append(sdad)
    check(signatures[0] != signatures[1], "two unpredictable numbers got the same signed dynamic data")


@case("EMV-04", "GENERATE AC: AAC and ARQC as asked, no second after a final one, none before GPO",
      "EMV Book 3 §6.5.5, §9.3", destructive=True)
def emv_ac_types(ctx):
    ctx.need_destructive()
    _need_3des(ctx)
    ctx.select_role("financial")
    _, afl = _start(ctx)
    values = {}
    for where, rec in _records(ctx, afl):
        values.update(_tlv(rec, where))
    cdol1, cdol2 = values.get(0x8C, b""), values.get(0x8D, b"")
    ctx.select_role("financial")
    _gac(ctx, TC, cdol1, "GENERATE AC before GPO", 0x6985)
    _start(ctx)
    cid, _ = _gac(ctx, AAC, cdol1, "first GENERATE AC asking AAC")
    check(cid == AAC, f"asked an AAC, the card gave {NAMES.get(cid, cid)}")
    _gac(ctx, AAC, cdol2, "a second GENERATE AC after an AAC", 0x6985)
    _start(ctx)
    cid, _ = _gac(ctx, ARQC, cdol1, "first GENERATE AC asking ARQC")
    check(cid == ARQC, f"asked an ARQC, the card gave {NAMES.get(cid, cid)}")
    cid, _ = _gac(ctx, AAC, cdol2, "second GENERATE AC (unable to go online) asking AAC")
    check(cid == AAC, f"second GENERATE AC asked an AAC, the card gave {NAMES.get(cid, cid)}")
    _gac(ctx, AAC, cdol2, "a third GENERATE AC", 0x6985)


@case("EMV-05", "ATC: GET DATA 9F36 grows by one per first GENERATE AC and survives a reset",
      "EMV Book 3 §6.5.7, Book 4", destructive=True)
def emv_atc(ctx):
    ctx.need_destructive()
    _need_3des(ctx)
    ctx.select_role("financial")
    before = ctx.expect("80CA9F3600", 0x9000, note="GET DATA ATC")
    check(before[:3] == bytes.fromhex("9F3602"), f"GET DATA 9F36 answered {before.hex().upper()}")
    _, afl = _start(ctx)
    values = {}
    for where, rec in _records(ctx, afl):
        values.update(_tlv(rec, where))
    _, atc = _gac(ctx, AAC, values.get(0x8C, b""), "GENERATE AC asking AAC")
    check(atc == int.from_bytes(before[3:], "big") + 1, f"ATC {atc} after {before[3:].hex().upper()}")
    ctx.reset()
    ctx.select_role("financial")
    after = ctx.expect("80CA9F3600", 0x9000, note="GET DATA ATC after a reset")
    check(int.from_bytes(after[3:], "big") == atc, f"the ATC read {after[3:].hex().upper()} after a reset, not {atc}")
    ctx.expect("80CA9F1300", 0x9000, note="GET DATA last online ATC")
    log_format = ctx.expect("80CA9F4F00", 0x9000, note="GET DATA log format")
    check(find(log_format, 0x9F4F), "GET DATA 9F4F gave no log format")
