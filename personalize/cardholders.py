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


def values(holder: dict[str, str], profile: Profile, factor: bytes, checked: bool = False) -> dict[str, str]:
    """The item values of one cardholder for one chip (its diversification factor); `checked` when data
    preparation has checked the record already."""
    problems = [] if checked else check(holder, profile)
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


# ---- cardholder files -------------------------------------------------------------------------

class CsvError(ValueError):
    """A cardholder file that cannot be read at all (encoding, header); names the file and line."""


def read_csv(path: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a UTF-8 cardholder CSV as (line number, fields); the header names the columns."""
    return list(iter_csv(path))


def iter_csv(path: str):
    """The rows of a cardholder CSV one at a time, (line number, fields): a file of any size in flat memory."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise CsvError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
            unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
            if unknown:
                raise CsvError(f"{path}: line 1: unknown column(s) {', '.join(unknown)}")
            for row in reader:
                yield reader.line_num, {k: (v or "") for k, v in row.items() if k}
    except UnicodeDecodeError as e:
        raise CsvError(f"{path}: not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise CsvError(f"{path}: {e.strerror}") from None


def _chunks(rows, size: int):
    chunk = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def check_stream(rows, profile: Profile, workers: int | None = None, chunk: int = 2000):
    """Chunks of (line, row, problems) in file order, checked on all cores with a bounded number of chunks in
    flight, so memory stays flat however many rows come. Duplicates are not looked for here."""
    import os
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or os.cpu_count() or 1
    if workers == 1:
        for part in _chunks(rows, chunk):
            yield [(line, row, check(row, profile)) for line, row in part]
        return
    with ProcessPoolExecutor(workers, initializer=_load_profile, initargs=(profile.source,)) as pool:
        flight: deque = deque()
        for part in _chunks(rows, chunk):
            flight.append((part, pool.submit(_check_rows, part)))
            if len(flight) > 2 * workers:
                yield _joined(*flight.popleft())
        while flight:
            yield _joined(*flight.popleft())


def _joined(part, future):
    return [(line, row, p) for (line, row), (_, p) in zip(part, future.result())]


_WORKER_PROFILE: list = []


def _load_profile(source) -> None:
    """A check worker builds the profile once, not once per chunk."""
    from .profile import build
    _WORKER_PROFILE[:] = [build(source)]


def _check_rows(chunk):
    return [(line, check(row, _WORKER_PROFILE[0])) for line, row in chunk]


def _check_chunk(args) -> list[tuple[int, list[tuple[str, str]]]]:
    profile_source, chunk = args
    from .profile import build
    prof = build(profile_source)
    return [(line, check(row, prof)) for line, row in chunk]


def check_all(rows: list[tuple[int, dict[str, str]]], profile: Profile, workers: int | None = None,
              chunk: int = 2000) -> dict[int, list[tuple[str, str]]]:
    """Every problem of every row (line → problems), the checks spread over all cores; duplicates too."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or os.cpu_count() or 1
    problems: dict[int, list[tuple[str, str]]] = {}
    if workers > 1 and len(rows) > chunk:
        parts = [(profile.source, rows[i:i + chunk]) for i in range(0, len(rows), chunk)]
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_check_chunk, parts):
                problems.update((line, p) for line, p in result if p)
    else:
        problems.update((line, p) for line, p in ((line, check(row, profile)) for line, row in rows) if p)
    for field in ("ssn", "card_number"):
        first: dict[str, int] = {}
        for line, row in rows:
            value = (row.get(field) or "").strip()
            if not value:
                continue
            if value in first:
                problems.setdefault(line, []).append((field, f"duplicate of line {first[value]}"))
            else:
                first[value] = line
    return problems


def write_rejects(path: str, problems: dict[int, list[tuple[str, str]]]) -> None:
    """The reject file: one CSV line per problem (line, field, reason), written atomically."""
    import csv
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "field", "reason"])
        for line in sorted(problems):
            for field, reason in problems[line]:
                w.writerow([line, field, reason])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷钱汤尹黎易常武乔贺赖龚文"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍红娥玲芬燕鹏辉建国建华志强海燕"


def generate(n: int, seed: int = 1, region: str = "330300", start: int = 0) -> list[dict[str, str]]:
    """n fictitious, valid and distinct cardholders (for tests and benchmarks)."""
    import random

    from applets.encoding import card_number_check, id_check_digit

    rng = random.Random(seed)
    out = []
    base = dt.date(1945, 1, 1)
    for i in range(start, start + n):
        # Birth date and sequence both come from i, so every ID is distinct; the sequence's
        # parity gives the sex, as GB 11643 has it.
        birth = (base + dt.timedelta(days=(i // 1000) % 21900)).strftime("%Y%m%d")
        seq = i % 1000
        sex = "1" if seq % 2 else "2"
        ssn17 = f"{region[:4]}02{birth}{seq:03d}"
        ssn = ssn17 + id_check_digit(ssn17)
        letter = "ABCDEFGHJKLMNPQRSTUVWXYZ"[(i // 10_000_000) % 24]
        body = f"{letter}{i % 10_000_000:07d}"
        check = card_number_check(body)
        if check >= 10:
            body = f"{'ABCDEFGHJKLMNPQRSTUVWXYZ'[(i // 10_000_000 + 12) % 24]}{i % 10_000_000:07d}"
            check = card_number_check(body)
        name = rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.randint(1, 2)))
        out.append({"ssn": ssn, "name": name, "sex": sex, "ethnicity": "01", "birthplace": region[:4] + "02",
                    "birth_date": birth, "card_number": body + str(check), "issue_date": "20250310",
                    "expiry_date": "20350310", "region": region, "init_org": region + "000001",
                    "person_id": f"{region[:4]}{i:08d}", "first_region": region,
                    "pan": f"621799{i:013d}", "pan_expiry": "350331"})
    return out


def write_csv(path: str, holders: list[dict[str, str]]) -> None:
    """Write cardholders as a UTF-8 CSV with the documented columns."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(REQUIRED + OPTIONAL), extrasaction="ignore")
        w.writeheader()
        w.writerows(holders)
