"""The writes a self-service kiosk makes to an issued card, as public kiosk code does (psam.md §1).

EF0D (person id, place of first application) after EXTERNAL AUTHENTICATE with key 0D; EF05/EF06
after key 04 where a bureau's kiosks complete the card data. Records are written by tag
(UPDATE RECORD P2 28/30/68) and every one is read back. A change of name or ID number is key
information: the Qingdao guide cancels the card and issues a new one, so it is refused unless
the profile's `kiosk: {rewrite_key_data: true}` says the bureau's rules allow it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardos.files import KEY_EXTERNAL
from terminal import apdus, flows
from terminal.factors import Factors
from terminal.security import SecurityModule
from terminal.status import sw_name

from . import cardholders
from .compiler import DataError, card_key, encode_item, writer_key_id
from .profile import FileDecl, Item, Profile
from .readout import authenticate_reader, card_version

KEY_DATA = ("name", "name_extension", "ssn")
KEY_DATA_RULE = ("a change of name or ID number is never written into an issued card: cancel it "
                 "(sscard card cancel) and issue a new one (Qingdao card guide); a profile with "
                 "kiosk: {rewrite_key_data: true} allows it where the bureau's rules do")


class KioskError(ValueError):
    """A write the kiosk must not or cannot make; names the field or step, never a secret."""


@dataclass(frozen=True)
class Change:
    """One record to write: the file, the record's number, its item and the new record bytes."""

    file: FileDecl
    number: int
    item: Item
    record: bytes


def plan(profile: Profile, sets: dict[str, str]) -> list[Change]:
    """The records the field=value pairs change, checked as cardholder data; KioskError if refused."""
    _, ssse = profile.role("ssse")
    rewrite = bool((profile.source.get("kiosk") or {}).get("rewrite_key_data", False))
    found = {}
    for f in ssse.files:
        for n, it in enumerate(f.items, 1):
            if it.field in sets and it.value is None:
                found[it.field] = (f, n, it)
    for name in sets:
        if name in KEY_DATA and not rewrite:
            raise KioskError(f"{name}: {KEY_DATA_RULE}")
        if name not in found:
            raise KioskError(f"{name}: no field of that name in EF05, EF06 or EF0D of profile {profile.name}")
    problems = [(f, why) for f, why in cardholders.check(sets, profile) if f in sets]
    if problems:
        raise KioskError("; ".join(f"{f}: {why}" for f, why in problems))
    out = []
    for name, value in sets.items():
        f, n, it = found[name]
        try:
            out.append(Change(f, n, it, encode_item(it, {name: value})))
        except DataError as e:
            raise KioskError(str(e)) from None
    return sorted(out, key=lambda c: (ssse.files.index(c.file), c.number))


def write(transport, profile: Profile, sm: SecurityModule, sets: dict[str, str]) -> list[str]:
    """Authenticate for each file, write its records by tag, then read every one back; the steps done."""
    changes = plan(profile, sets)
    send = flows.sender(transport)
    factors = flows.read_factors(send, transport.atr())
    _, ssse = profile.role("ssse")
    done = []
    _select_ssse(send)
    opened = None
    for c in changes:
        key_id = writer_key_id(c.file, ssse)
        if key_id is None:
            raise KioskError(f"EF{c.file.spec.sfi:02X}: its write condition names no key a kiosk can use")
        if key_id != opened:
            _authenticate(send, profile, sm, factors, key_id)
            opened = key_id
        _, sw = send(apdus.update_record(c.item.tag, c.file.spec.sfi, c.record, by_tag=True),
                     f"UPDATE RECORD tag {c.item.tag:02X}")
        if sw != 0x9000:
            raise KioskError(f"EF{c.file.spec.sfi:02X} tag {c.item.tag:02X}: UPDATE RECORD answered {sw:04X} ({sw_name(sw)})")
        done.append(f"EF{c.file.spec.sfi:02X} tag {c.item.tag:02X} ({c.item.field}) written")
    return done + _read_back(send, profile, sm, factors, changes)


def _select_ssse(send) -> None:
    _, sw = send(apdus.select_name(apdus.SSSE_NAME), "select SSSE")
    if sw != 0x9000:
        raise KioskError(f"SELECT SSSE answered {sw:04X} ({sw_name(sw)})")


def _authenticate(send, profile: Profile, sm: SecurityModule, factors: Factors, key_id: int) -> None:
    _, ssse = profile.role("ssse")
    decl = next((k for k in ssse.keys if k.type == KEY_EXTERNAL and k.id == key_id), None)
    if decl is None:
        raise KioskError(f"the profile's SSSE has no external key {key_id:02X}")
    try:
        ref = card_key(decl, factors)
    except DataError as e:
        raise KioskError(str(e)) from None
    sw = flows.external_authenticate(send, sm, ref, key_id, f"EXTERNAL AUTHENTICATE {key_id:02X}")
    if sw != 0x9000:
        raise KioskError(f"EXTERNAL AUTHENTICATE with key {key_id:02X} answered {sw:04X} ({sw_name(sw)})")


def _read_back(send, profile: Profile, sm: SecurityModule, factors: Factors, changes: list[Change]) -> list[str]:
    _select_ssse(send)
    if card_version(send).startswith("3"):   # 3.00 reads personal data after key 0A
        authenticate_reader(send, profile, sm, factors)
    out = []
    for c in changes:
        data, sw = send(apdus.read_record(c.number, c.file.spec.sfi), f"read back tag {c.item.tag:02X}")
        where = f"EF{c.file.spec.sfi:02X} record {c.number} (tag {c.item.tag:02X})"
        if sw != 0x9000:
            raise KioskError(f"read-back: {where} answered {sw:04X} ({sw_name(sw)})")
        if data != c.record:
            raise KioskError(f"read-back: {where} differs from what was written")
        out.append(f"{where} read back")
    return out



def parse_sets(texts) -> dict[str, str]:
    """FIELD=VALUE texts as the writes they ask for, checked against the profile by plan()."""
    values = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise KioskError(f"--set {text!r}: FIELD=VALUE is needed")
        values[name.strip()] = value.strip()
    return values
