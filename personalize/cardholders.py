"""Cardholder data: the fields a card needs, their checks, and the item values they become.

Columns (CSV header names): ssn, name, sex, ethnicity, birthplace, birth_date, card_number,
issue_date, expiry_date, region, init_org; optional: card_type (default 3), person_id,
first_region, pan, pan_expiry (YYMMDD). Dates are YYYYMMDD. Region codes are 6 digits.
"""

from __future__ import annotations

import datetime as dt
import re

from applets.encoding import ItemError, check_card_number, check_citizen_id, split_name

from .profile import Profile

REQUIRED = ("ssn", "name", "sex", "ethnicity", "birthplace", "birth_date", "card_number",
            "issue_date", "expiry_date", "region", "init_org")
OPTIONAL = ("card_type", "person_id", "first_region", "pan", "pan_expiry")
RID = "D156000005"
SEXES = {"0": "unknown", "1": "male", "2": "female", "9": "unstated"}


class HolderError(ValueError):
    """Invalid cardholder data: the field and the reason, never the whole record."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {why}" for f, why in problems))
        self.problems = problems


def _date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except (TypeError, ValueError):
        return None


def _name_capacity(profile: Profile) -> tuple[int, int]:
    first = ext = 0
    for _, df in profile.walk():
        for f in df.files:
            for it in f.items:
                if it.field == "name":
                    first = it.length
                elif it.field == "name_extension":
                    ext = it.length
    return first or 30, ext


def check(holder: dict[str, str], profile: Profile) -> list[tuple[str, str]]:
    """Every problem of one cardholder record, as (field, reason)."""
    h = {k: (v or "").strip() for k, v in holder.items()}
    problems = [(f, "missing") for f in REQUIRED if not h.get(f)]
    missing = {f for f, _ in problems}

    def bad(field, why):
        if field not in missing:
            problems.append((field, why))

    if h.get("ssn") and (why := check_citizen_id(h["ssn"])):
        bad("ssn", why)
    if h.get("name"):
        first, ext = _name_capacity(profile)
        try:
            split_name(h["name"], first, ext)
        except ItemError as e:
            bad("name", str(e))
    if h.get("sex") and h["sex"] not in SEXES:
        bad("sex", "must be 1 (male), 2 (female), 0 or 9")
    if h.get("ethnicity") and not (re.fullmatch(r"[0-9]{2}", h["ethnicity"]) and 1 <= int(h["ethnicity"]) <= 58
                                   or h.get("ethnicity") in ("97", "98")):
        bad("ethnicity", "must be a GB 3304 code 01..58 (97, 98 for other)")
    for f in ("birthplace", "region", "first_region"):
        if h.get(f) and not re.fullmatch(r"[1-8][0-9]{5}", h[f]):
            bad(f, "must be a 6-digit region code")
    if h.get("init_org") and not re.fullmatch(r"[0-9]{1,24}", h["init_org"]):
        bad("init_org", "must be up to 24 digits")
    dates = {f: _date(h[f]) for f in ("birth_date", "issue_date", "expiry_date") if h.get(f)}
    for f, d in dates.items():
        if d is None:
            bad(f, "must be a real date YYYYMMDD")
    b, i, e = (dates.get(f) for f in ("birth_date", "issue_date", "expiry_date"))
    if b and i and not b < i:
        bad("issue_date", "must come after the birth date")
    if i and e and not i < e:
        bad("expiry_date", "must come after the issue date")
    if b and h.get("ssn") and check_citizen_id(h["ssn"]) is None and h["ssn"][6:14] != h["birth_date"]:
        bad("birth_date", "differs from the date in the social security number")
    if h.get("card_number") and (why := check_card_number(h["card_number"], profile.card_number_checked)):
        bad("card_number", why)
    if h.get("card_type") and not re.fullmatch(r"[0-9A-Z]", h["card_type"]):
        bad("card_type", "must be one digit or capital letter")
    if h.get("person_id") and not re.fullmatch(r"[0-9A-Za-z]{1,12}", h["person_id"]):
        bad("person_id", "must be up to 12 letters or digits")
    if h.get("pan") and not re.fullmatch(r"[0-9]{12,19}", h["pan"]):
        bad("pan", "must be 12..19 digits")
    if h.get("pan_expiry") and not re.fullmatch(r"[0-9]{2}(0[1-9]|1[0-2])[0-3][0-9]", h["pan_expiry"]):
        bad("pan_expiry", "must be YYMMDD")
    return problems


def card_id(region: str, factor: bytes) -> str:
    """Card identification code: region (BCD) ‖ RID D156000005 ‖ 8 card-specific bytes (spec §2)."""
    return region + RID + factor.hex().upper()


def values(holder: dict[str, str], profile: Profile, factor: bytes) -> dict[str, str]:
    """The item values of one cardholder for one chip (its diversification factor)."""
    problems = check(holder, profile)
    if problems:
        raise HolderError(problems)
    h = {k: (v or "").strip() for k, v in holder.items()}
    first, ext = _name_capacity(profile)
    head, tail = split_name(h["name"], first, ext)
    out = {k: h.get(k, "") for k in REQUIRED + OPTIONAL}
    out.update(name=head.decode("gbk"), name_extension=tail.decode("gbk"),
               card_id=card_id(h["region"], factor), card_type=h.get("card_type") or "3")
    return out


def sample() -> dict[str, str]:
    """A fictitious cardholder with valid data, for demos and tests."""
    return {
        "ssn": "330302199003071215", "name": "张小燕", "sex": "2", "ethnicity": "01",
        "birthplace": "330302", "birth_date": "19900307", "card_number": "A02796279",
        "issue_date": "20240115", "expiry_date": "20340115", "region": "330300",
        "init_org": "330300000001", "person_id": "330300000042", "first_region": "330300",
        "pan": "6217990000001234567", "pan_expiry": "340131",
    }
