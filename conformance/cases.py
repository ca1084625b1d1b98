"""The conformance cases: each with an id, a title, the clause it checks and what it expects."""

from __future__ import annotations

import datetime as dt

from applets.encoding import check_card_number, check_citizen_id, decode
from applets.life import ACTIVE, LIFE_SFI
from cardos.apdu import build
from cardos.files import KEY_INTERNAL, KEY_MAINTENANCE, KEY_PIN_RELOAD, KEY_PIN_UNBLOCK
from cardos.tlv import find, parse
from personalize import lifecycle
from personalize.compiler import card_key
from terminal.flows import check_card
from personalize.profile import Item
from terminal.security import SecurityModuleError

from .context import CaseFailure, CaseSkipped, Context
from .registry import CASES, Case, case, check

SSSE_NAME = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")


def _life_state(ctx: Context, role: str) -> str | None:
    path, df = ctx.role(role)
    for f in df.files:
        if f.spec.sfi == LIFE_SFI:
            ctx.select_path(path)
            data, sw = ctx.send(build(0x00, 0xB2, 0x01, (LIFE_SFI << 3) | 4, le=0), "life state")
            return chr(data[2]) if sw == 0x9000 and len(data) > 2 else None
    return None


def _active(ctx: Context, role: str = "ssse") -> None:
    """PIN cases need an active application: activate it with the issuer keys when it is not."""
    state = _life_state(ctx, role)
    if state in (None, ACTIVE):
        return
    keys = ctx.need_keys()
    account = "ss" if role == "ssse" else "bank"
    try:
        lifecycle.perform(ctx.transport, lifecycle.life_script("activate", ctx.profile, ctx.factor, account,
                                                               "conformance test"), keys)
    except SecurityModuleError as e:
        raise CaseSkipped(f"activating the {account} account: {e}") from None
    ctx.reset()


def _items(ctx: Context, role: str = "ssse"):
    path, df = ctx.role(role)
    for f in df.files:
        for n, it in enumerate(f.items, 1):
            yield path, f, n, it


# ---- answer to reset and selection -----------------------------------------------------------

@case("ATR-01", "ATR is 3B 6D 00 00 with 13 historical bytes", "spec §3")
def atr_shape(ctx):
    atr = ctx.transport.atr()
    check(atr[:4] == bytes.fromhex("3B6D0000") and len(atr) == 17,
          f"ATR {atr.hex().upper()} is not 3B6D0000 + 13 historical bytes")


@case("SEL-01", "SELECT MF by FID, and with no data", "ISO 7816-4 §11.1.1")
def select_mf(ctx):
    ctx.expect("00A40000023F00", 0x9000, note="select MF by FID")
    ctx.expect("00A4000000", 0x9000, note="select MF without data")


@case("SEL-02", "SELECT SSSE by name; FCI carries the DF name and the algorithm flag 9F0C", "spec §2")
def select_ssse(ctx):
    fci = ctx.expect(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME), 0x9000, note="select SSSE")
    check(fci[:1] == b"\x6f", "SELECT SSSE answered no FCI template 6F")
    check(find(fci, 0x84) == SSSE_NAME, "FCI tag 84 is not the DF name sx1.sh.社会保障")
    flag = find(fci, 0x9F0C)
    want = {"3des": b"\x86\x01\x01", "sm4": b"\x86\x01\x03"}[ctx.profile.algorithm.value]
    check(flag == want, f"algorithm flag 9F0C is {flag.hex().upper() if flag else 'absent'}, "
                        f"expected {want.hex().upper()}")


@case("SEL-03", "SELECT EF05 with P1 00 and with P1 02 under SSSE", "spec §3")
def select_ef(ctx):
    for p1 in ("00", "02"):
        ctx.expect(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME), 0x9000, note="select SSSE")
        ctx.expect(f"00A4{p1}0002EF05", 0x9000, note=f"select EF05, P1 {p1}")
        data = ctx.expect("00B2010400", 0x9000, note="read record 1 of the current EF")
        check(data[:1] == b"\x01", f"record 1 of EF05 (selected with P1 {p1}) does not start with tag 01")


@case("SEL-04", "SELECT each social-security application by AID", "data-items.md, spec §2")
def select_adfs(ctx):
    path, df = ctx.role("ssse")
    for child in df.dfs:
        if not child.spec.name:
            continue
        ctx.expect(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME), 0x9000, note="select SSSE")
        fci = ctx.expect(build(0x00, 0xA4, 0x04, 0x00, child.spec.name), 0x9000,
                         note=f"select {child.spec.name.hex().upper()}")
        check(find(fci, 0x84) == child.spec.name, f"FCI of {child.spec.name.hex().upper()} names another DF")


@case("SEL-05", "PSE, PPSE and the PBOC debit application select by name", "spec §2, JR/T 0025")
def select_financial(ctx):
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, b"1PAY.SYS.DDF01"), 0x9000, note="select PSE")
    fci = ctx.expect(build(0x00, 0xA4, 0x04, 0x00, b"2PAY.SYS.DDF01", 0), 0x9000, note="select PPSE")
    check(bytes.fromhex("A000000333010101") in fci, "the PPSE FCI does not list A000000333010101")
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A000000333010101")), 0x9000, note="select ADF")


@case("SEL-06", "SELECT of a missing file answers 6A82 and keeps the current file", "spec §5")
def select_missing(ctx):
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME), 0x9000, note="select SSSE")
    ctx.expect("00A4000002EEEE", 0x6A82, note="select a FID that does not exist")
    ctx.expect("00A40200020005", 0x6A82, note="select a missing EF under the current DF (P1 02)")
    ctx.expect("00B2012C00", 0x9000, note="EF05 still reads by SFI")


# ---- records --------------------------------------------------------------------------------

@case("REC-01", "EF05 and EF06 read the same by record number and by tag", "spec §2, ISO 7816-4 §11.3")
def records_both_ways(ctx):
    _maybe_open_personal(ctx)
    for _, f, n, it in _items(ctx):
        if f.spec.sfi not in (5, 6):
            continue
        by_number = ctx.expect(build(0x00, 0xB2, n, (f.spec.sfi << 3) | 4, le=0), 0x9000,
                               note=f"EF{f.spec.sfi:02X} record {n} by number")
        if it.tag in [x.tag for x in f.items[: n - 1]]:
            continue
        by_tag = ctx.expect(build(0x00, 0xB2, it.tag, f.spec.sfi << 3, le=0), 0x9000,
                            note=f"EF{f.spec.sfi:02X} tag {it.tag:02X}")
        check(by_number == by_tag, f"EF{f.spec.sfi:02X} record {n} differs from the record with tag {it.tag:02X}")
        check(by_number[:1] == bytes([it.tag]), f"EF{f.spec.sfi:02X} record {n} has tag {by_number[:1].hex()}, "
                                                f"the {ctx.profile.generation} layout puts {it.tag:02X} there")


@case("REC-02", "EF06 record order follows the card generation; 4E only on 2.00/3.00", "spec §2 (EF06 table)")
def ef06_order(ctx):
    _maybe_open_personal(ctx)
    order = [0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D] if ctx.profile.generation == "1.00" else \
        [0x08, 0x09, 0x4E, 0x0A, 0x0B, 0x0C, 0x0D]
    for n, tag in enumerate(order, 1):
        data = ctx.expect(build(0x00, 0xB2, n, 0x34, le=0), 0x9000, note=f"EF06 record {n}")
        check(data[0] == tag, f"EF06 record {n} has tag {data[0]:02X}, expected {tag:02X}")
    ctx.expect(build(0x00, 0xB2, len(order) + 1, 0x34, le=0), 0x6A83, note="no record after the last")
    if ctx.profile.generation == "1.00":
        ctx.expect("00B24E3000", 0x6A83, note="1.00 cards have no tag 4E")


@case("REC-03", "Le 00, a larger Le and the value-only Le (6Cxx, then the resend)", "spec §2 (Le)")
def le_rules(ctx):
    ctx.select_role("ssse")
    full = ctx.expect("00B2072C00", 0x9000, note="card number, Le 00")
    check(ctx.expect("00B2072CFF", 0x9000, note="Le FF") == full, "Le larger than the record gave another answer")
    _, sw = ctx.send_raw(build(0x00, 0xB2, 0x07, 0x2C, le=len(full) - 2), "Le of the value only")
    check(sw == 0x6C00 | len(full), f"value-only Le answered {sw:04X}, expected 6C{len(full):02X}")
    check(ctx.expect(build(0x00, 0xB2, 0x07, 0x2C, le=len(full)), 0x9000, note="resend", raw=True) == full,
          "the resend with the exact Le gave another answer")
    ctx.expect("00B2772C00", 0x6A83, note="a record that does not exist")


def _maybe_open_personal(ctx: Context) -> None:
    """Select SSSE; on a 3.00 card first check the card and open key 0A (needs the keys)."""
    ctx.select_role("ssse")
    if ctx.profile.generation == "3.00":
        if ctx.keys is None:
            raise CaseSkipped("3.00 personal data needs the issuer key file (--keys) or a PSAM (--psam)")
        _internal_auth(ctx)
        check(ctx.authenticate("ssse", 0x0A) == 0x9000, "EXTERNAL AUTHENTICATE with key 0A failed")


# ---- items ----------------------------------------------------------------------------------

def _format_problem(it: Item, value: bytes) -> str | None:
    if it.fmt == "cn":
        text = value.hex().upper()
        digits = text.rstrip("F")
        if not digits.isdigit() and digits:
            return f"cn item holds {text}: not digits padded with F"
    elif it.fmt == "an":
        body = value.rstrip(b"\x00")
        if b"\x00" in body:
            return "an item has 00 inside its text"
        try:
            body.decode("ascii") if body.isascii() else body.decode("gbk")
        except UnicodeDecodeError:
            return "an item is neither ASCII nor GBK"
    elif it.fmt == "gbk":
        try:
            value.rstrip(b"\x00").decode("gbk")
        except UnicodeDecodeError:
            return "GBK item does not decode"
    return None


_SEMANTIC = {
    "ssn": lambda v: check_citizen_id(v),
    "card_number": lambda v: check_card_number(v),
    "sex": lambda v: None if v in ("0", "1", "2", "9") else f"sex code {v!r} is not 0, 1, 2 or 9",
    "card_id": lambda v: None if v[6:16] == "D156000005" else f"bytes 3-7 are {v[6:16]}, not the RID D156000005",
}


def _date_problem(v: str) -> str | None:
    try:
        dt.datetime.strptime(v, "%Y%m%d")
    except ValueError:
        return f"{v!r} is not a date YYYYMMDD"
    return None


def _item_case(role: str, sfi: int, number: int, it: Item):
    def run(ctx):
        if role == "ssse" and sfi in (5, 6, 0x0D):
            _maybe_open_personal(ctx)
        else:
            ctx.select_role(role)
        data = ctx.expect(build(0x00, 0xB2, number, (sfi << 3) | 4, le=0), 0x9000, note=f"record {number}")
        check(data[0] == it.tag, f"record {number} has tag {data[0]:02X}, expected {it.tag:02X}")
        check(data[1] == it.length and len(data) == it.length + 2,
              f"tag {it.tag:02X}: length {data[1]}, spec length {it.length}")
        value = data[2:]
        problem = _format_problem(it, value)
        check(problem is None, f"tag {it.tag:02X}: {problem}")
        if it.field in _SEMANTIC and any(value):
            problem = _SEMANTIC[it.field](decode(it.fmt, value))
            check(problem is None, f"{it.name}: {problem}")
        if it.field in ("birth_date", "issue_date", "expiry_date") and any(value):
            problem = _date_problem(decode(it.fmt, value))
            check(problem is None, f"{it.name}: {problem}")
        if it.tag == 0x03 and sfi == 5:
            check(decode("an", value) in ("1.00", "2.00", "3.00"), f"specification version {value!r}")
    return run


def register_item_cases(profile) -> list[Case]:
    """One case per data item of EF05, EF06 and EF0D of the profile's SSSE."""
    out = []
    _, df = profile.role("ssse")
    for f in df.files:
        if f.spec.sfi not in (5, 6, 0x0D):
            continue
        for n, it in enumerate(f.items, 1):
            out.append(Case(f"ITEM-{f.spec.sfi:02X}{it.tag:02X}", f"EF{f.spec.sfi:02X} tag {it.tag:02X} ({it.name}): "
                            f"{it.fmt} {it.length}", "spec §2 (data items, encodings)",
                            _item_case("ssse", f.spec.sfi, n, it)))
    return out


# ---- access conditions ------------------------------------------------------------------------

@case("ACC-01", "Fingerprint and photo refused before key 0A, served after", "spec §2, §4")
def acc_fingerprint(ctx):
    ctx.select_role("ssse")
    for sfi in (7, 8):
        ctx.expect(build(0x00, 0xB0, 0x80 | sfi, 0x00, le=16), 0x6982, note=f"EF0{sfi} before key 0A")
    if ctx.keys is None:
        raise CaseSkipped("refusals checked; serving after key 0A needs --keys")
    check(ctx.authenticate("ssse", 0x0A) == 0x9000, "EXTERNAL AUTHENTICATE with key 0A failed")
    for sfi in (7, 8):
        ctx.expect(build(0x00, 0xB0, 0x80 | sfi, 0x00, le=16), 0x9000, note=f"EF0{sfi} after key 0A")


@case("ACC-02", "DF01 public information refused before the PIN, served after", "spec §4")
def acc_df01(ctx):
    _active(ctx)
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("D15600000500")), 0x9000, note="select DF01")
    ctx.expect("00B2012C00", 0x6982, note="DF01 EF05 before the PIN")
    ctx.expect(build(0x00, 0x20, 0x00, 0x00, ctx.pin_bcd()), 0x9000, note="VERIFY")
    ctx.expect("00B2012C00", 0x9000, note="DF01 EF05 after the PIN")


@case("ACC-03", "EF05/EF06 updates refused without key 04, granted after it", "spec §4")
def acc_update(ctx):
    _maybe_open_personal(ctx)
    ef06 = next(f for f in ctx.role("ssse")[1].files if f.spec.sfi == 6)
    sex = next(n for n, it in enumerate(ef06.items, 1) if it.tag == 0x0A)
    record = ctx.expect(build(0x00, 0xB2, sex, 0x34, le=0), 0x9000, note="current sex record")
    ctx.expect(build(0x00, 0xDC, sex, 0x34, record), 0x6982, note="update without key 04")
    if ctx.keys is None:
        raise CaseSkipped("refusal checked; the update after key 04 needs --keys")
    check(ctx.authenticate("ssse", 0x04) == 0x9000, "EXTERNAL AUTHENTICATE with key 04 failed")
    ctx.expect(build(0x00, 0xDC, sex, 0x34, record), 0x9000, note="the same record written back after key 04")


@case("ACC-04", "3.00: EF06 and EF05 dates refused before authentication, served after", "spec §4")
def acc_3_00(ctx):
    if ctx.profile.generation != "3.00":
        raise CaseSkipped("3.00 cards only")
    ctx.select_role("ssse")
    ctx.expect("00B2013400", 0x6982, note="EF06 before authentication")
    ctx.expect("00B2052C00", 0x6982, note="EF05 issue date before authentication")
    _maybe_open_personal(ctx)
    ctx.expect("00B2013400", 0x9000, note="EF06 after INTERNAL + EXTERNAL AUTHENTICATE")
    ctx.expect("00B2052C00", 0x9000, note="EF05 issue date after")


# ---- authentication -----------------------------------------------------------------------------

def _internal_auth(ctx: Context) -> None:
    keys = ctx.need_keys()
    ref = ctx.key_ref("ssse", KEY_INTERNAL, 0x00)
    problem = check_card(ctx.send, keys, ref, 0x00)
    check(problem is None, problem)


@case("AUTH-01", "INTERNAL AUTHENTICATE proves the card with the issuer key", "spec §3")
def auth_internal(ctx):
    ctx.select_role("ssse")
    _internal_auth(ctx)


@case("AUTH-02", "EXTERNAL AUTHENTICATE: wrong cryptogram 63Cx, right one restores the counter", "spec §3, §4")
def auth_external(ctx):
    ctx.need_keys()
    ctx.select_role("ssse")
    ctx.expect("0084000008", 0x9000, note="challenge")
    _, sw = ctx.send(build(0x00, 0x82, 0x00, 0x0A, bytes(8 if ctx.profile.algorithm.value == "3des" else 16)),
                     "wrong cryptogram")
    check(sw & 0xFFF0 == 0x63C0, f"a wrong cryptogram answered {sw:04X}, expected 63Cx")
    check(ctx.authenticate("ssse", 0x0A) == 0x9000, "the right cryptogram was refused")
    ctx.expect("0084000008", 0x9000, note="challenge")
    _, again = ctx.send(build(0x00, 0x82, 0x00, 0x0A, bytes(8 if ctx.profile.algorithm.value == "3des" else 16)),
                        "wrong cryptogram again")
    check(again == sw, f"the counter was not restored: {again:04X} after success, {sw:04X} before")
    check(ctx.authenticate("ssse", 0x0A) == 0x9000, "the right cryptogram after the second wrong one was refused")


@case("MAC-01", "A MAC over a used or earlier challenge is refused", "spec §3 (line protection)")
def mac_stale(ctx):
    keys = ctx.need_keys()
    ctx.select_role("ssse")
    ref = ctx.key_ref("ssse", KEY_MAINTENANCE)
    old = ctx.expect("0084000008", 0x9000, note="first challenge")
    ctx.expect("0084000008", 0x9000, note="second challenge: the first is no longer valid")
    body = ctx.expect("00B2022C00", 0x9000, note="card type record")
    mac = keys.mac(ref, old, bytes((0x04, 0xDC, 0x02, 0x2C, len(body) + 4)) + body)
    _, sw = ctx.send(build(0x04, 0xDC, 0x02, 0x2C, body + mac), "UPDATE RECORD MACed over the stale challenge")
    check(sw in (0x6988, 0x9302, 0x6984), f"a stale-challenge MAC answered {sw:04X}")
    check(ctx.secured(0x04, 0xDC, 0x02, 0x2C, body, ref, "the same with a fresh challenge") == 0x9000,
          "a correct MAC was refused")


@case("MAC-02", "A wrong MAC answers 6988 (or 9302)", "spec §3, §5")
def mac_wrong(ctx):
    ctx.need_keys()
    ctx.select_role("ssse")
    ref = ctx.key_ref("ssse", KEY_MAINTENANCE)
    body = ctx.expect("00B2022C00", 0x9000, note="card type record")
    sw = ctx.secured(0x04, 0xDC, 0x02, 0x2C, body, ref, "UPDATE RECORD with a wrong MAC", good_mac=False)
    check(sw in (0x6988, 0x9302), f"a wrong MAC answered {sw:04X}")
    check(ctx.secured(0x04, 0xDC, 0x02, 0x2C, body, ref, "with the right MAC") == 0x9000, "the right MAC was refused")


# ---- PINs ---------------------------------------------------------------------------------------

def _tries(ctx) -> int:
    _, sw = ctx.send("00200000", "tries left")
    check(sw & 0xFFF0 == 0x63C0, f"VERIFY without data answered {sw:04X}, expected 63Cx")
    return sw & 0x0F


def _wrong_pin(ctx) -> bytes:
    right = ctx.pin_bcd()
    return bytes(b ^ 0x11 if (b & 0xF0) != 0xF0 else b for b in right)


@case("PIN-01", "Wrong PINs count down 63Cx; the right PIN restores the counter", "spec §1, §4")
def pin_count(ctx):
    _active(ctx)
    ctx.select_role("ssse")
    start = _tries(ctx)
    check(start >= 2, f"only {start} tries left: the card must not be locked by this test")
    for n in range(1, min(start - 1, 3) + 1):
        _, sw = ctx.send(build(0x00, 0x20, 0x00, 0x00, _wrong_pin(ctx)), "wrong PIN")
        check(sw == 0x63C0 | (start - n), f"wrong PIN {n}: answered {sw:04X}, expected 63C{start - n:X}")
    ctx.expect(build(0x00, 0x20, 0x00, 0x00, ctx.pin_bcd()), 0x9000, note="right PIN")
    check(_tries(ctx) == start, "the right PIN did not restore the try counter")


@case("PIN-02", "The PIN locks at the profile's limit (6983 for every PIN command); the issuer resets it",
      "spec §1, §4", destructive=True)
def pin_lock(ctx):
    ctx.need_destructive()
    _active(ctx)
    ctx.select_role("ssse")
    limit = next(k.tries for k in ctx.role("ssse")[1].keys if k.type == 0x3A)
    for _ in range(_tries(ctx)):
        ctx.send(build(0x00, 0x20, 0x00, 0x00, _wrong_pin(ctx)), "wrong PIN")
    ctx.expect(build(0x00, 0x20, 0x00, 0x00, ctx.pin_bcd()), 0x6983, note="right PIN on a locked card")
    ctx.expect(build(0x80, 0x5E, 0x01, 0x00, ctx.pin_bcd() + b"\xff" + ctx.pin_bcd()), 0x6983, note="CHANGE PIN")
    _reset_pin(ctx, "ssse")
    ctx.select_role("ssse")
    check(_tries(ctx) == limit, f"after the reset the counter is not the profile's {limit}")


def _reset_pin(ctx: Context, role: str) -> None:
    if ctx.keys is None:
        raise CaseFailure("the PIN is locked and cannot be restored without --keys")
    lifecycle.perform(ctx.transport, lifecycle.pin_script("reset", ctx.profile, ctx.factor, ctx.keys,
                                                          "ss" if role == "ssse" else "bank", new=ctx.pin_for(role)),
                      ctx.keys)


@case("PIN-03", "Locking the social-security PIN leaves the bank PIN untouched", "spec §1", destructive=True)
def pin_independent(ctx):
    ctx.need_destructive()
    _active(ctx)
    _active(ctx, "financial")
    ctx.select_role("financial")
    before = ctx.expect("80CA9F1700", 0x9000, note="bank PIN tries")
    ctx.select_role("ssse")
    for _ in range(_tries(ctx)):
        ctx.send(build(0x00, 0x20, 0x00, 0x00, _wrong_pin(ctx)), "wrong PIN")
    ctx.select_role("financial")
    check(ctx.expect("80CA9F1700", 0x9000, note="bank PIN tries") == before, "the bank PIN counter moved")
    _reset_pin(ctx, "ssse")


@case("PIN-04", "RELOAD PIN: a wrong MAC is refused, the right one sets the PIN", "spec §3")
def pin_reload(ctx):
    keys = ctx.need_keys()
    _active(ctx)
    ctx.select_role("ssse")
    ref = ctx.key_ref("ssse", KEY_PIN_RELOAD)
    pin = ctx.pin_bcd()
    _, sw = ctx.send(build(0x80, 0x5E, 0x00, 0x00, pin + bytes(4)), "RELOAD PIN, wrong MAC")
    check(sw in (0x6988, 0x9302), f"a wrong reload MAC answered {sw:04X}")
    ctx.expect(build(0x80, 0x5E, 0x00, 0x00, pin + keys.mac(ref, b"", pin)), 0x9000, note="RELOAD PIN, right MAC")
    ctx.expect(build(0x00, 0x20, 0x00, 0x00, pin), 0x9000, note="VERIFY the reloaded PIN")


@case("PIN-05", "UNBLOCK PIN: a wrong MAC is refused, the right one resets the counter", "spec §3")
def pin_unblock(ctx):
    ctx.need_keys()
    _active(ctx)
    ctx.select_role("ssse")
    ctx.send(build(0x00, 0x20, 0x00, 0x00, _wrong_pin(ctx)), "one wrong PIN")
    ref = ctx.key_ref("ssse", KEY_PIN_UNBLOCK)
    sw = ctx.secured(0x84, 0x24, 0x00, 0x00, b"", ref, "UNBLOCK PIN, wrong MAC", good_mac=False)
    check(sw in (0x6988, 0x9302), f"a wrong unblock MAC answered {sw:04X}")
    check(ctx.secured(0x84, 0x24, 0x00, 0x00, b"", ref, "UNBLOCK PIN, right MAC") == 0x9000, "UNBLOCK PIN refused")
    limit = next(k.tries for k in ctx.role("ssse")[1].keys if k.type == 0x3A)
    check(_tries(ctx) == limit, "UNBLOCK PIN did not reset the counter")


@case("PIN-06", "CHANGE PIN to another value and back", "spec §3")
def pin_change(ctx):
    _active(ctx)
    ctx.select_role("ssse")
    pin = ctx.pin_bcd()
    other = bytes.fromhex("975310")
    ctx.expect(build(0x80, 0x5E, 0x01, 0x00, pin + b"\xff" + other), 0x9000, note="CHANGE PIN")
    ctx.expect(build(0x00, 0x20, 0x00, 0x00, other), 0x9000, note="VERIFY the new PIN")
    ctx.expect(build(0x80, 0x5E, 0x01, 0x00, other + b"\xff" + pin), 0x9000, note="CHANGE PIN back")


# ---- card life ---------------------------------------------------------------------------------

@case("LIFE-01", "APPLICATION BLOCK answers 6A81 on SELECT; APPLICATION UNBLOCK lifts it", "spec §4, PBOC")
def app_block(ctx):
    ctx.need_keys()
    ref = ctx.key_ref("ssse", KEY_MAINTENANCE)
    ctx.select_role("ssse")
    check(ctx.secured(0x84, 0x1E, 0x00, 0x00, b"", ref, "APPLICATION BLOCK") == 0x9000, "APPLICATION BLOCK refused")
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME), 0x6A81, note="SELECT the blocked application")
    check(ctx.secured(0x84, 0x18, 0x00, 0x00, b"", ref, "APPLICATION UNBLOCK") == 0x9000, "APPLICATION UNBLOCK refused")
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME), 0x9000, note="SELECT after unblocking")


@case("LIFE-02", "CARD BLOCK: every command answers 6A81 afterwards (irreversible)", "PBOC", destructive=True)
def card_block(ctx):
    ctx.need_destructive()
    ctx.need_keys()
    mk = next((k for k in ctx.profile.mf.keys if k.type == KEY_MAINTENANCE), None)
    if mk is None:
        raise CaseSkipped("the profile's MF has no maintenance key")
    ref = ctx.usable(card_key(mk, ctx.factor))
    ctx.expect("00A40000023F00", 0x9000, note="select MF")
    check(ctx.secured(0x84, 0x16, 0x00, 0x00, b"", ref, "CARD BLOCK") == 0x9000, "CARD BLOCK refused")
    ctx.reset()
    ctx.expect("00A40000023F00", 0x6A81, note="SELECT MF on a blocked card")


# ---- answers and errors -----------------------------------------------------------------------------

@case("T0-01", "GET RESPONSE with nothing waiting is refused; 61xx answers are fetched whole", "spec §3, ISO 7816-4 §5.3")
def get_response(ctx):
    _, sw = ctx.send_raw("00C0000000", "GET RESPONSE with nothing waiting")
    check(sw != 0x9000, "GET RESPONSE with nothing waiting answered 9000")
    _, sw = ctx.send_raw(build(0x00, 0xA4, 0x04, 0x00, SSSE_NAME, 0), "SELECT SSSE, case 4")
    if sw >> 8 == 0x61:
        data = ctx.expect(build(0x00, 0xC0, 0x00, 0x00, le=sw & 0xFF), 0x9000, note="GET RESPONSE", raw=True)
        check(data[:1] == b"\x6f", "GET RESPONSE did not return the FCI")
    else:
        check(sw == 0x9000, f"SELECT answered {sw:04X}")


ERRORS = [
    ("ERR-01", "An unknown instruction answers 6D00", "00FE000000", 0x6D00),
    ("ERR-02", "An unknown class answers 6E00", "A0A40000023F00", 0x6E00),
    ("ERR-03", "Wrong P1/P2 answers 6A86", "00A4080002EF05", 0x6A86),
    ("ERR-04", "A length that fits no APDU case answers 6700", "00A40000023F000000", 0x6700),
    ("ERR-05", "A logical channel other than 0 answers 6881", "01A40000023F00", 0x6881),
    ("ERR-06", "GET CHALLENGE of an unsupported length answers 6700", "0084000005", 0x6700),
]


def _error_case(apdu: str, sw: int):
    def run(ctx):
        ctx.expect(apdu, sw, note="malformed command")
        ctx.expect("00A40000023F00", 0x9000, note="the card still answers")
    return run


for _id, _title, _apdu, _sw in ERRORS:
    CASES.append(Case(_id, _title, "spec §5, ISO 7816-4 §5.6", _error_case(_apdu, _sw)))


@case("ERR-07", "READ BINARY beyond the end of a file answers 6B00", "spec §5")
def offset_beyond(ctx):
    ctx.expect(build(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("D15600000500")), 0x9000, note="select DF01")
    ctx.expect("00B0960004", 0x9000, note="EF16 (free, 0x128 bytes) offset 0 by SFI")
    ctx.expect("00A4020002EF16", 0x9000, note="select EF16")
    ctx.expect("00B0012804", 0x6B00, note="offset 0x128: the end of the file")


# ---- financial application -------------------------------------------------------------------------

@case("FIN-01", "GPO answers an AFL; SFI 2 record 1 holds the PAN (tag 5A)", "spec §2, JR/T 0025")
def fin_gpo(ctx):
    ctx.select_role("financial")
    gpo = ctx.expect("80A8000002830000", 0x9000, note="GET PROCESSING OPTIONS")
    check(gpo[:1] == b"\x80" and len(gpo) >= 8 and (len(gpo) - 4) % 4 == 0, "GPO answer is not format 1 AIP ‖ AFL")
    record = ctx.expect("00B2011400", 0x9000, note="READ RECORD SFI 2 record 1")
    inner = dict(parse(record)).get(0x70, b"")
    check(find(inner, 0x5A) is not None or 0x5A in dict(parse(inner)), "SFI 2 record 1 has no PAN (5A)")


@case("FIN-02", "GET DATA 9F17 gives the bank PIN's tries", "JR/T 0025")
def fin_get_data(ctx):
    ctx.select_role("financial")
    data = ctx.expect("80CA9F1700", 0x9000, note="GET DATA 9F17")
    check(data[:3] == bytes.fromhex("9F1701") and 1 <= data[3] <= 15, f"9F17 answer {data.hex().upper()}")


# ---- extension area --------------------------------------------------------------------------------

@case("EXT-01", "A department creates only its own DF in the extension area", "spec §2 (extension area)", destructive=True)
def ext_isolation(ctx):
    ctx.need_destructive()
    ctx.need_keys()
    from cardos.files import DedicatedFile
    from personalize import fmcos
    ctx.select_role("ssse")
    check(ctx.authenticate("ssse", 0x25) == 0x9000, "the health department key was refused")
    ctx.expect(fmcos.create_file(DedicatedFile(0xDF06, size=0x100, name=b"EXT.NOT.HEALTH")), 0x6982,
               note="health creates civil affairs' DF06")
    _, sw = ctx.send(fmcos.create_file(DedicatedFile(0xDF05, size=0x100, name=b"EXT.HEALTH")), "health creates DF05")
    check(sw in (0x9000, 0x6A86), f"health could not create its own DF05: {sw:04X}")


# ---- the PSAM (psam.md) --------------------------------------------------------------------------

PSAM_SELECT = "00A4040006D15600000590"


@case("PSAM-01", "The PSAM selects by AID with 61xx + GET RESPONSE and reads its 6-byte terminal number", "psam.md §1-§2")
def psam_select(ctx):
    psam = ctx.need_psam()
    _, sw = ctx.send_raw(PSAM_SELECT, "select the PSAM application", to=psam)
    check(sw >> 8 == 0x61, f"SELECT answered {sw:04X}, a T=0 PSAM answers 61xx")
    fci = ctx.expect(build(0x00, 0xC0, 0x00, 0x00, le=sw & 0xFF), 0x9000, note="GET RESPONSE", raw=True, to=psam)
    check(bytes.fromhex("D15600000590") in fci, "the FCI does not name D15600000590")
    number = ctx.expect("00B0960006", 0x9000, note="terminal number (EF 0016)", to=psam)
    check(len(number) == 6, f"terminal number of {len(number)} bytes")


@case("PSAM-02", "The PSAM refuses DES CRYPT before DES INIT, unknown keys, wrong lengths and P1 bits", "psam.md §2")
def psam_errors(ctx):
    psam = ctx.need_psam()
    psam.reset()
    _, sw = ctx.send(PSAM_SELECT, "select the PSAM application", to=psam)
    check(sw == 0x9000 or sw >> 8 == 0x61, f"SELECT answered {sw:04X}")
    ctx.expect("80FA000008" + "00" * 8, 0x6985, note="DES CRYPT before DES INIT", to=psam)
    ctx.expect("801AFFFF08" + "00" * 8, 0x6A88, 0x6A82, note="DES INIT of an unknown key", to=psam)
    ctx.expect("80FA000007" + "00" * 7, 0x6700, 0x6985, note="DES CRYPT of 7 bytes", to=psam)
    ctx.expect("80FA090008" + "00" * 8, 0x6A86, note="DES CRYPT with P1 bits outside b1-b3", to=psam)


@case("PSAM-03", "The card takes the PSAM's kiosk cryptogram (BF DE, E(K, R) ‖ R) for keys 04 and 0D", "psam.md §1")
def psam_kiosk(ctx):
    ctx.need_psam()
    for key_id in (0x04, 0x0D):
        ctx.select_role("ssse")
        check(ctx.authenticate("ssse", key_id) == 0x9000, f"EXTERNAL AUTHENTICATE {key_id:02X} with the PSAM's cryptogram")
        sent = [x.command for x in ctx.log if x.command.startswith(f"008200{key_id:02X}")]
        check(bool(sent) and sent[-1][8:10] == "10", f"EXTERNAL AUTHENTICATE {key_id:02X} was not sent with Lc 10")
