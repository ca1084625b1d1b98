"""Cardholder data: the fields a card needs, their checks, and the item values they become.

Columns (CSV header names): ssn, name, sex, ethnicity, birthplace, birth_date, card_number,
issue_date, expiry_date, region, init_org; optional: card_type (default 3), person_id,
first_region, pan (Luhn-checked), pan_expiry (YYMMDD), name_latin (the bank card's
cardholder name, EMV 5F20; default "/"). Dates are YYYYMMDD. Region codes are 6 digits.

Every value is normalized once, when it is read (`normalize`): leading and trailing spaces go,
names are NFC, codes NFKC (full-width digits become ASCII) and the ID and card number upper
case. Checks, duplicate searches, the journal, file names and the card all see only that value.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field as dataclass_field

from applets.encoding import ItemError, check_card_number, check_citizen_id, check_pan, luhn_digit, split_name

from .profile import Profile

REQUIRED = ("ssn", "name", "sex", "ethnicity", "birthplace", "birth_date", "card_number",
            "issue_date", "expiry_date", "region", "init_org")
OPTIONAL = ("card_type", "person_id", "first_region", "pan", "pan_expiry", "name_latin")
RID = "D156000005"
SEXES = {"0": "unknown", "1": "male", "2": "female", "9": "unstated"}
# The problem of a line the reader could not split into fields (never a CSV column name).
RECORD = "record"
# Spaces only: a control character is refused by the checks, never stripped away unseen.
_SPACES = "".join(chr(c) for c in range(0x3001) if unicodedata.category(chr(c)) == "Zs")
_UPPER = ("ssn", "card_number")


class HolderError(ValueError):
    """Invalid cardholder data: the field and the reason, never the whole record."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {why}" for f, why in problems))
        self.problems = problems


@dataclass(frozen=True)
class Rules:
    """What a plausible date is: from 1900 to 2099, birth not after today, issue not beyond
    today + margin. `today` is fixed when the rules are made, so one batch checks with one date."""

    today: dt.date = dataclass_field(default_factory=dt.date.today)
    issue_margin_days: int = 31
    earliest: dt.date = dt.date(1900, 1, 1)
    latest: dt.date = dt.date(2099, 12, 31)


def normalize(holder: dict[str, str | None]) -> dict[str, str]:
    """The one normalized form of a record: spaces stripped, NFC names, NFKC codes, upper-case IDs."""
    out = {}
    for k, v in holder.items():
        text = (v or "").strip(_SPACES)
        if k == RECORD:
            out[k] = text
            continue
        text = unicodedata.normalize("NFC" if k == "name" else "NFKC", text).strip(_SPACES)
        out[k] = text.upper() if k in _UPPER else text
    return out


def _date(text: str, fmt: str = "%Y%m%d", digits: int = 8) -> dt.date | None:
    # strptime alone takes "2025031" (one-digit day); the exact digit count comes first.
    if not re.fullmatch(f"[0-9]{{{digits}}}", text):
        return None
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError:
        return None


def _control(text: str) -> str | None:
    for i, ch in enumerate(text, 1):
        if unicodedata.category(ch) in ("Cc", "Cf"):
            return f"control character U+{ord(ch):04X} at character {i}"
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


def check(holder: dict[str, str], profile: Profile, rules: Rules | None = None) -> list[tuple[str, str]]:
    """Every problem of one cardholder record, as (field, reason)."""
    h = normalize(holder)
    if h.get(RECORD):
        return [(RECORD, h[RECORD])]
    rules = rules or Rules()
    problems = [(f, "missing") for f in REQUIRED if not h.get(f)]
    problems += [(f, why) for f, v in h.items() if (why := _control(v))]
    reported = {f for f, _ in problems}

    def bad(field, why):
        if field not in reported:
            problems.append((field, why))
            reported.add(field)

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
    for f, why in _date_problems(h, rules):
        bad(f, why)
    if h.get("ssn") and check_citizen_id(h["ssn"]) is None:
        if h.get("birth_date") and h["ssn"][6:14] != h["birth_date"]:
            bad("birth_date", "differs from the date in the social security number")
        if (why := _sex_against_id(h["ssn"], h.get("sex", ""))):
            bad("sex", why)
    if h.get("card_number") and (why := check_card_number(h["card_number"], profile.card_number_checked)):
        bad("card_number", why)
    if h.get("card_type") and not re.fullmatch(r"[0-9A-Z]", h["card_type"]):
        bad("card_type", "must be one digit or capital letter")
    if h.get("person_id") and not re.fullmatch(r"[0-9A-Za-z]{1,12}", h["person_id"]):
        bad("person_id", "must be up to 12 letters or digits")
    if h.get("pan") and (why := check_pan(h["pan"])):
        bad("pan", why)
    if h.get("name_latin") and not re.fullmatch(r"[ -~]{2,26}", h["name_latin"]):
        bad("name_latin", "must be 2..26 printable ASCII characters")
    if h.get("pan_expiry") and _date(h["pan_expiry"], "%y%m%d", 6) is None:
        bad("pan_expiry", "must be a real date YYMMDD")
    return problems


def _date_problems(h: dict[str, str], rules: Rules) -> list[tuple[str, str]]:
    """Each date exactly 8 digits, real, between the rules' limits; birth ≤ issue < expiry; issue not
    beyond today + margin."""
    problems, dates = [], {}
    for f in ("birth_date", "issue_date", "expiry_date"):
        if not h.get(f):
            continue
        d = _date(h[f])
        if d is None:
            problems.append((f, "must be a real date of exactly 8 digits YYYYMMDD"))
        elif not rules.earliest <= d <= rules.latest:
            problems.append((f, f"{d:%Y-%m-%d} is outside {rules.earliest:%Y}..{rules.latest:%Y}"))
        else:
            dates[f] = d
    b, i, e = (dates.get(f) for f in ("birth_date", "issue_date", "expiry_date"))
    if b and b > rules.today:
        problems.append(("birth_date", f"{b:%Y-%m-%d} is in the future (today is {rules.today:%Y-%m-%d})"))
    if b and i and b > i:
        problems.append(("issue_date", "must not come before the birth date"))
    limit = rules.today + dt.timedelta(days=rules.issue_margin_days)
    if i and i > limit:
        problems.append(("issue_date", f"{i:%Y-%m-%d} is more than {rules.issue_margin_days} days after today "
                                       f"({rules.today:%Y-%m-%d})"))
    if i and e and not i < e:
        problems.append(("expiry_date", "must come after the issue date"))
    return problems


def _sex_against_id(ssn: str, sex: str) -> str | None:
    """GB 11643: the 17th character of the ID is odd for a man, even for a woman."""
    if sex not in ("1", "2"):
        return None
    says = "1" if int(ssn[16]) % 2 else "2"
    if sex == says:
        return None
    return (f"is {sex} ({SEXES[sex]}) but the social security number's 17th digit {ssn[16]} "
            f"says {says} ({SEXES[says]})")


def card_id(region: str, factor: bytes) -> str:
    """Card identification code: region (BCD) ‖ RID D156000005 ‖ 8 card-specific bytes (spec §2)."""
    return region + RID + factor.hex().upper()


def values(holder: dict[str, str], profile: Profile, factor: bytes, rules: Rules | None = None,
           checked: bool = False) -> dict[str, str]:
    """The item values of one cardholder for one chip (its diversification factor); `checked` when data
    preparation has checked the record already."""
    problems = [] if checked else check(holder, profile, rules)
    if problems:
        raise HolderError(problems)
    h = normalize(holder)
    first, ext = _name_capacity(profile)
    head, tail = split_name(h["name"], first, ext)
    out = {k: h.get(k, "") for k in REQUIRED + OPTIONAL}
    out.update(name=head.decode("gbk"), name_extension=tail.decode("gbk"),
               card_id=card_id(h["region"], factor), card_type=h.get("card_type") or "3",
               name_latin=h.get("name_latin") or "/")
    if out["pan"] and out["pan_expiry"]:
        out["track2"] = track2(out["pan"], out["pan_expiry"])
    return out


def track2(pan: str, expiry: str, service_code: str = "220") -> str:
    """Track 2 equivalent data (EMV 57) as hex: PAN D YYMM service code, 0s to 37 digits, F."""
    digits = f"{pan}D{expiry[:4]}{service_code}"
    return digits.ljust(37, "0") + "F"


def sample() -> dict[str, str]:
    """A fictitious cardholder with valid data, for demos and tests."""
    return {
        "ssn": "330302199003071215", "name": "张小燕", "sex": "1", "ethnicity": "01",
        "birthplace": "330302", "birth_date": "19900307", "card_number": "A02796279",
        "issue_date": "20240115", "expiry_date": "20340115", "region": "330300",
        "init_org": "330300000001", "person_id": "330300000042", "first_region": "330300",
        # A 16-digit PAN: PyPI emvtool cannot show the F-padded odd-length ones.
        "pan": "6217990000123453", "pan_expiry": "340131", "name_latin": "ZHANG/XIAOYAN",
    }


# ---- cardholder files -------------------------------------------------------------------------

class CsvError(ValueError):
    """A cardholder file that cannot be read at all (encoding, header); names the file and line."""


ENCODINGS = ("utf-8", "gbk", "gb18030")


def read_csv(path: str, encoding: str = "utf-8") -> list[tuple[int, dict[str, str]]]:
    """Rows of a cardholder CSV as (line number, normalized fields); the header names the columns."""
    return list(iter_csv(path, encoding))


def iter_csv(path: str, encoding: str = "utf-8"):
    """The rows of a cardholder CSV one at a time, (line number, normalized fields): a file of any size in
    flat memory.

    No legal value holds a line break, so each line is one record: a stray quote spoils its own
    line (reported there, under the field `record`) and never swallows the lines after it.
    """
    header, lines = iter_lines(path, encoding)
    for n, line in lines:
        yield n, parse_line(header, line)


def iter_lines(path: str, encoding: str = "utf-8", digest=None):
    """The file's column names and a generator of its record lines as (line number, text); the header is read
    and checked at once, so a bad file fails here. With `digest` (a hashlib object) every byte read, blank
    lines included, goes into it too: read to the end, it is the whole file's digest."""
    import csv

    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CsvError(f"{path}: {e.strerror}") from None
    first = f.readline()
    if digest is not None:
        digest.update(first)
    line = _decode_line(path, first, codec, encoding, 1).rstrip("\r\n")
    try:
        header = _header(path, [c.strip(_SPACES) for c in next(csv.reader([line]))] if first else [])
    except CsvError:
        f.close()
        raise

    def lines():
        plain = codec.replace("-sig", "")
        with f:
            for n, raw in enumerate(f, 2):
                if digest is not None:
                    digest.update(raw)
                text = _decode_line(path, raw, plain, encoding, n).rstrip("\r\n")
                if text.strip(_SPACES):
                    yield n, text
    return header, lines()


def parse_line(header: list[str], line: str) -> dict[str, str]:
    """One record line as normalized fields; a line that is not one well-formed record says why under `record`."""
    import csv

    fields = next(csv.reader([line]))
    row = dict(zip(header, fields))
    if (col := _unclosed_quote(line)) is not None:
        row[RECORD] = f"a quoted field opens at column {col} and does not close on this line (a stray \"?)"
    elif len(fields) != len(header):
        row[RECORD] = f"{len(fields)} fields where the header has {len(header)}"
    return normalize(row)


def _header(path: str, header: list[str]) -> list[str]:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CsvError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise CsvError(f"{path}: line 1: unknown column(s) {', '.join(unknown)}")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise CsvError(f"{path}: line 1: column(s) {', '.join(twice)} appear twice")
    return header


def _decode_line(path: str, raw: bytes, codec: str, encoding: str, n: int) -> str:
    """One line's text; an undecodable byte is named by line and column, with the encoding the file looks like."""
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        start = e.start
        # Foreign bytes can pass for a character or two before the decoder stops: name the start of the run.
        while start > 0 and raw[start - 1] >= 0x80:
            start -= 1
        col = len(raw[:start].decode(codec, errors="replace")) + 1
        with open(path, "rb") as f:         # only on the error path: judge the whole file's encoding
            hint = _looks_like(f.read(), encoding)
        raise CsvError(f"{path}: line {n}, column {col}: byte 0x{raw[start]:02X} is not {encoding.upper()}; "
                       f"{hint}") from None
    except LookupError:
        raise CsvError(f"{path}: unknown encoding {encoding!r} (one of {', '.join(ENCODINGS)})") from None


def _chunks(rows, size: int):
    chunk = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_WORKER: list = []


def _load_profile(source, rules, station: int) -> None:
    """A check worker builds the profile once, not once per chunk."""
    from .profile import build
    die_with_parent(station)
    _WORKER[:] = [build(source), rules]


def die_with_parent(station: int) -> None:
    """A worker process (data checks, cards) ends when the station that started it (pid `station`) is killed, else
    it waits forever and holds what the station shared with it."""
    import ctypes
    import os
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)        # PR_SET_PDEATHSIG, Linux only
    except (OSError, AttributeError):
        pass
    if os.getppid() != station:
        os._exit(1)                 # killed before the line above took effect: nobody would send the signal


def _parse_and_check(header, chunk, profile=None, rules=None):
    profile, rules = (profile, rules) if profile is not None else _WORKER
    out = []
    for n, line in chunk:
        row = parse_line(header, line)
        out.append((n, row, check(row, profile, rules)))
    return out


def check_file(path: str, profile: Profile, encoding: str = "utf-8", workers: int | None = None, chunk: int = 2000,
               rules: Rules | None = None, digest=None):
    """A cardholder file as chunks of (line, normalized row, problems) in file order: lines parsed and checked on
    all cores, a bounded number of chunks in flight, so memory stays flat however long the file. Duplicates
    are not looked for here. `digest`: see iter_lines."""
    import os
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or os.cpu_count() or 1
    rules = rules or Rules()
    header, lines = iter_lines(path, encoding, digest)
    if workers == 1:
        for part in _chunks(lines, chunk):
            yield _parse_and_check(header, part, profile, rules)
        return
    with ProcessPoolExecutor(workers, initializer=_load_profile,
                             initargs=(profile.source, rules, os.getpid())) as pool:
        flight: deque = deque()
        for part in _chunks(lines, chunk):
            flight.append(pool.submit(_parse_and_check, header, part))
            if len(flight) > 2 * workers:
                yield flight.popleft().result()
        while flight:
            yield flight.popleft().result()


def _unclosed_quote(line: str) -> int | None:
    """The column (from 1) of a quote that opens a field and never closes on the line, or None."""
    i = 0
    while i <= len(line):
        if line.startswith('"', i):
            j = i + 1
            while True:
                j = line.find('"', j)
                if j < 0:
                    return i + 1
                if line.startswith('""', j):
                    j += 2
                    continue
                break
            i = j + 1
        comma = line.find(",", i)
        if comma < 0:
            return None
        i = comma + 1
    return None


def _looks_like(raw: bytes, tried: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it looks like UTF-16 (Excel's 'Unicode text'): save it as CSV UTF-8"
    for enc in ("utf-8", "gbk", "gb18030"):
        if enc == tried.lower():
            continue
        try:
            raw.decode(enc)
        except UnicodeDecodeError:
            continue
        return f"the whole file reads as {enc.upper()}: add --encoding {enc}"
    return f"it is not {' or '.join(e.upper() for e in ENCODINGS)} either"


def _check_chunk(args) -> list[tuple[int, list[tuple[str, str]]]]:
    profile_source, rules, chunk = args
    from .profile import build
    prof = build(profile_source)
    return [(line, check(row, prof, rules)) for line, row in chunk]


def check_all(rows: list[tuple[int, dict[str, str]]], profile: Profile, workers: int | None = None,
              chunk: int = 2000, rules: Rules | None = None) -> dict[int, list[tuple[str, str]]]:
    """Every problem of every row (line → problems), the checks spread over all cores; duplicates too."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or os.cpu_count() or 1
    rules = rules or Rules()
    problems: dict[int, list[tuple[str, str]]] = {}
    if workers > 1 and len(rows) > chunk:
        parts = [(profile.source, rules, rows[i:i + chunk]) for i in range(0, len(rows), chunk)]
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_check_chunk, parts):
                problems.update((line, p) for line, p in result if p)
    else:
        problems.update((line, p) for line, p in ((line, check(row, profile, rules)) for line, row in rows) if p)
    for field in ("ssn", "card_number"):
        first: dict[str, int] = {}
        for line, row in rows:
            value = row.get(field)
            if not value or row.get(RECORD):
                continue
            if value in first:
                problems.setdefault(line, []).append((field, f"duplicate of line {first[value]}"))
            else:
                first[value] = line
    return problems


def check_file_all(path: str, profile: Profile, encoding: str = "utf-8", workers: int | None = None,
                   rules: Rules | None = None) -> tuple[int, dict[int, list[tuple[str, str]]]]:
    """What check_all finds, for a file of any size: (records, line → problems). The file streams through the
    checks; duplicates are looked up in a temporary on-disk table, so only the problems stay in memory."""
    import sqlite3
    import tempfile

    problems: dict[int, list[tuple[str, str]]] = {}
    records = 0
    with tempfile.TemporaryDirectory(prefix="sscard-check-") as tmp:
        seen = sqlite3.connect(f"{tmp}/seen.sqlite")
        seen.execute("PRAGMA journal_mode=OFF")
        seen.execute("PRAGMA synchronous=OFF")              # a scratch table: thrown away with the directory
        seen.execute("CREATE TABLE seen (field TEXT, value TEXT, line INTEGER, PRIMARY KEY (field, value))")
        for chunk in check_file(path, profile, encoding, workers, rules=rules):
            records += len(chunk)
            for line, row, found in chunk:
                if found:
                    problems[line] = found
            for field in ("ssn", "card_number"):
                values = [(line, row[field]) for line, row, _ in chunk if row.get(field) and not row.get(RECORD)]
                earlier = dict(_seen_lines(seen, field, [v for _, v in values]))
                new = []
                for line, value in values:
                    if value in earlier:
                        problems.setdefault(line, []).append((field, f"duplicate of line {earlier[value]}"))
                    else:
                        earlier[value] = line
                        new.append((field, value, line))
                seen.executemany("INSERT INTO seen VALUES (?, ?, ?)", new)
        seen.close()
    return records, problems


def _seen_lines(db, field: str, values: list[str]):
    for i in range(0, len(values), 500):
        part = values[i:i + 500]
        yield from db.execute(f"SELECT value, line FROM seen WHERE field = ? AND value IN ({', '.join('?' * len(part))})",
                              (field, *part))


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
                    "pan": _pan(f"621799{i:012d}"), "pan_expiry": "350331"})
    return out


def _pan(body: str) -> str:
    return body + luhn_digit(body)


def write_csv(path: str, holders: list[dict[str, str]]) -> None:
    """Write cardholders as a UTF-8 CSV with the documented columns."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(REQUIRED + OPTIONAL), extrasaction="ignore")
        w.writeheader()
        w.writerows(holders)
