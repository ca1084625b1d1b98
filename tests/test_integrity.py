"""Production integrity: one card per cardholder, an audit log that cannot be quietly cut (issue 14)."""

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import main
from personalize import batch, cardholders, crash
from personalize.audit import verify
from personalize.journal import JournalError, open_journal
from personalize.keys import KeyFileError, SoftwareKeys, load_key_file, save_key_file
from tests.ss import done_cards, key_file, keys, prof

ROOT = Path(__file__).resolve().parent.parent
PASS = "integrity test passphrase"
TODAY = dt.date(2026, 6, 1)


def cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {"SSCARD_KEYS_PASSPHRASE": PASS}, catch_exceptions=False)


def _write(path, holders):
    cardholders.write_csv(str(path), holders)
    return str(path)


def _opts(folder, csv_path, **kw):
    return batch.Options(prof(), keys(), csv_path, str(folder / "journal.sqlite"), str(folder / "audit.jsonl"),
                         str(folder / "cards"), **kw)


def _run_args(folder, csv_path, keyfile):
    """`sscard perso run` as a separate process, its journal, log and cards in folder."""
    return [sys.executable, "-m", "cli", "perso", "run", "--cardholders", csv_path, "--keys", keyfile,
            "--out-dir", str(folder), "--journal", str(folder / "journal.sqlite"), "--audit", str(folder / "audit.jsonl")]


def _problems(folder, provider=None):
    j = open_journal(str(folder / "journal.sqlite"), create=False)
    try:
        return verify(folder / "audit.jsonl", (provider or keys()).audit_mac, j)[1]
    finally:
        j.close()


def _events(folder, event):
    return [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == event]


@pytest.fixture
def keyfile(tmp_path):
    return key_file(tmp_path / "keys.json", PASS)


class Killed(BaseException):
    """An in-process stand-in for SIGKILL: no handler of the batch catches it."""


# ---- 1. one card number, one SSN, across batches, whatever the spaces ---------------------------------

def test_a_trailing_space_does_not_make_a_second_card_across_batches(tmp_path):
    first = cardholders.generate(3, seed=1)
    batch.run_batch(_opts(tmp_path, _write(tmp_path / "a.csv", first)))
    spaced_number = dict(cardholders.generate(1, seed=2, start=50)[0], card_number=first[0]["card_number"] + " ")
    spaced_ssn = dict(cardholders.generate(1, seed=2, start=60)[0], ssn=" " + first[1]["ssn"].lower() + "\u3000")
    spaced_ssn.update(birth_date=first[1]["birth_date"], sex=first[1]["sex"])
    fresh = cardholders.generate(1, seed=2, start=70)
    result = batch.run_batch(_opts(tmp_path, _write(tmp_path / "b.csv", [spaced_number, spaced_ssn] + fresh)))
    assert (result.done, result.rejected) == (1, 2)
    rejects = Path(result.rejects_file).read_text()
    assert "2,card_number,already issued in an earlier batch" in rejects
    assert "3,ssn,already has a card from an earlier batch" in rejects
    names = sorted(p.name for p in (tmp_path / "cards").glob("*.json"))
    assert names == sorted(f"{h['card_number']}.json" for h in first + fresh)       # no "Y88703858 .json"


def test_the_journal_schema_itself_refuses_a_second_card_number_or_ssn(tmp_path):
    j = open_journal(str(tmp_path / "j.sqlite"))
    j.open_batch("b1", "p", "d", "s", "d", [(2, "A02796279", "330302199003071215", "pending", None)])
    for other in [(2, "A02796279", "110105194912310021", "pending", None),           # same card number
                  (2, "B08101113", "330302199003071215", "done", None)]:             # same SSN
        with pytest.raises(JournalError, match="line 2: card number"):
            j.open_batch("b2", "p", "d", "s", "d", [other])
        assert j.batch("b2") is None                                             # nothing half-written
    j.open_batch("b3", "p", "d", "s", "d", [(2, "A02796279", "330302199003071215", "rejected", "dup")])
    j.close()


# ---- 2. one process owns a batch; a card is claimed before any APDU -----------------------------------

HOLDER = """
import sys, time
from personalize.journal import Owner
owner = Owner(sys.argv[1], "batch test")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_with_the_holders_name_and_a_dead_holder_frees_the_batch(tmp_path):
    csv_path = _write(tmp_path / "h.csv", cardholders.generate(3, seed=3))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "journal.sqlite")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(batch.BatchError, match=rf"in use by pid {holder.pid} on \S+ since .*\(batch test\)"):
            batch.run_batch(_opts(tmp_path, csv_path))
    finally:
        holder.send_signal(signal.SIGKILL)                  # no clean-up code runs: the kernel drops the lock
        holder.wait()
    assert batch.run_batch(_opts(tmp_path, csv_path)).done == 3


def test_two_resumes_at_once_never_make_a_card_twice(tmp_path, keyfile):
    csv_path = _write(tmp_path / "h.csv", cardholders.generate(40, seed=4))
    args = _run_args(tmp_path, csv_path, keyfile)
    env = dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS)
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _done(tmp_path) < 2 and first.poll() is None:
        time.sleep(0.05)
    first.kill()
    assert first.wait() == -signal.SIGKILL, "the batch must be left half made"
    both = [subprocess.Popen(args + ["--resume"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(), p.communicate()[1]) for p in both]
    refused = [err for rc, err in outcomes if rc != 0]
    assert all("journal.sqlite is in use by pid" in err for err in refused), refused
    assert len(refused) <= 1             # one ran and one was refused, or they ran one after the other
    done = [e["card_number"] for e in _events(tmp_path, "card-done")]
    assert sorted(done) == sorted(h["card_number"] for h in cardholders.generate(40, seed=4))
    assert _problems(tmp_path) == []


def _done(folder) -> int:
    return done_cards(folder / "journal.sqlite")


def test_a_card_is_claimed_once(tmp_path):
    j = open_journal(str(tmp_path / "j.sqlite"))
    j.open_batch("b", "p", "d", "s", "d", [(2, "A02796279", "330302199003071215", "pending", None)])
    assert j.claim("b", lease=30).row == 2 and j.claim("b", lease=30) is None
    j.close()


# ---- 3. a kill between the journal's "done" and the audit line ------------------------------------------

def test_sigkill_between_journal_done_and_audit_line_is_recovered_on_resume(tmp_path, keyfile):
    holders = cardholders.generate(5, seed=6)
    csv_path = _write(tmp_path / "h.csv", holders)
    args = _run_args(tmp_path, csv_path, keyfile)
    env = dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS)
    # Append 1 is batch-start, 2 the first card, 3 the second: killed after its journal "done".
    killed = subprocess.run(args, cwd=ROOT, env=dict(env, SSCARD_TEST_CRASH="audit-append:3"), capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM cards WHERE state = 'done'").fetchone()[0] == 2
    assert len(_events(tmp_path, "card-done")) == 1                       # the second card's line is missing
    (missing,) = ({n for (n,) in db.execute("SELECT card_number FROM cards WHERE state = 'done'")}
                  - {e["card_number"] for e in _events(tmp_path, "card-done")})
    problems = _problems(tmp_path)
    assert "line 3: missing: the log ends at line 2, but the journal recorded lines up to 3 (the log was cut)" in problems
    assert subprocess.run(args + ["--resume"], cwd=ROOT, env=env, capture_output=True).returncode == 0
    assert _problems(tmp_path) == []
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines[2]["event"] == "card-done" and lines[2]["card_number"] == missing
    assert lines[3]["event"] == "recovered" and lines[3]["lines"] == [3]
    assert sorted(e["card_number"] for e in _events(tmp_path, "card-done")) == sorted(h["card_number"] for h in holders)


def test_in_process_kill_between_journal_done_and_audit_line_is_recovered(tmp_path, monkeypatch):
    holders = cardholders.generate(3, seed=7)
    csv_path = _write(tmp_path / "h.csv", holders)
    appends = []

    def crash_at(name):
        if name == "audit-append":
            appends.append(name)
            if len(appends) == 2:                                 # batch-start, then the first card's line
                raise Killed(name)

    monkeypatch.setattr(crash, "point", crash_at)
    with pytest.raises(Killed):
        batch.run_batch(_opts(tmp_path, csv_path))
    assert not (tmp_path / "audit.jsonl").read_text().count("card-done") and _done(tmp_path) == 1
    monkeypatch.setattr(crash, "point", lambda name: None)
    assert batch.run_batch(_opts(tmp_path, csv_path, resume=True)).done == 3
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines[:3]] == ["batch-start", "card-done", "recovered"]
    assert _problems(tmp_path) == []


# ---- 4. audit verify: truncation, forgery, gaps, swaps, a missing end ------------------------------

@pytest.fixture
def logged(tmp_path):
    batch.run_batch(_opts(tmp_path, _write(tmp_path / "h.csv", cardholders.generate(4, seed=8))))
    log = tmp_path / "audit.jsonl"
    return tmp_path, log, log.read_text().splitlines(keepends=True)


def _rechain(lines, mac, after):
    """What a forger does: recompute every hash from the line `after` on, with the only key he has."""
    from personalize.audit import _digest
    out, prev = [], json.loads(after)["hash"]
    for line in lines:
        body = json.loads(line)
        body.pop("hash")
        body["prev"] = prev
        body["hash"] = prev = _digest(mac, prev, body)
        out.append(json.dumps(body, ensure_ascii=False, sort_keys=True) + "\n")
    return out


def _sha256(data):
    import hashlib
    return hashlib.sha256(data).digest()


def test_verify_passes_an_untouched_log(logged):
    folder, log, lines = logged
    assert len(lines) == 6 and _problems(folder) == []


def test_verify_finds_the_last_line_deleted(logged):
    folder, log, lines = logged
    log.write_text("".join(lines[:-1]))
    problems = _problems(folder)
    assert "line 6: missing: the log ends at line 5, but the journal recorded lines up to 6 (the log was cut)" in problems
    assert any(p.startswith("line 1: batch ") and "has no batch-end" in p for p in problems)


def test_verify_finds_an_emptied_log(logged):
    folder, log, lines = logged
    log.write_text("")
    assert _problems(folder)[0] == ("line 1: missing: the log is empty, but the journal recorded lines up to 6 "
                                    "(the log was cut)")


@pytest.mark.parametrize("mac", [_sha256, SoftwareKeys({"X": keys()._masters["MK_MF"]}).audit_mac],
                         ids=["plain-sha256", "another-key"])
def test_verify_finds_a_line_edited_and_the_chain_rehashed(logged, mac):
    folder, log, lines = logged
    edited = lines[:]
    edited[3] = edited[3].replace('"personalized"', '"refused"')
    log.write_text("".join(lines[:3] + _rechain(edited[3:], mac, lines[2])))
    problems = _problems(folder)
    assert problems[0] == "line 4: its keyed hash does not match: edited, or forged without the audit key"
    assert "line 4: not the line the journal recorded there (card-done of batch " in "\n".join(problems)


def test_verify_finds_a_forged_line_appended(logged):
    folder, log, lines = logged
    forged = json.loads(lines[-1])
    forged.update(seq=7, event="card-done", card_number="A02796279", result="personalized")
    log.write_text("".join(lines + _rechain([json.dumps(forged) + "\n"], _sha256, lines[-1])))
    problems = _problems(folder)
    assert "line 7: its keyed hash does not match: edited, or forged without the audit key" in problems
    assert "line 7: the journal has no record of this line (added to the log)" in problems


def test_verify_finds_two_lines_swapped(logged):
    folder, log, lines = logged
    swapped = lines[:]
    swapped[2], swapped[3] = swapped[3], swapped[2]
    log.write_text("".join(swapped))
    problems = _problems(folder)
    assert "line 3: numbered 4 where 3 was due (a line was removed, inserted or moved)" in problems
    assert "line 3: does not follow line 2 (a line was removed, inserted or swapped)" in problems
    assert "line 4: does not follow line 3 (a line was removed, inserted or swapped)" in problems


def test_verify_finds_a_batch_without_its_end(tmp_path, keyfile):
    csv_path = _write(tmp_path / "h.csv", cardholders.generate(3, seed=9))
    args = _run_args(tmp_path, csv_path, keyfile)
    env = dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS, SSCARD_TEST_CRASH="claimed:2")
    assert subprocess.run(args, cwd=ROOT, env=env, capture_output=True).returncode == -signal.SIGKILL
    r = cli("audit", "verify", str(tmp_path / "audit.jsonl"), "--journal", str(tmp_path / "journal.sqlite"),
            "--keys", keyfile)
    assert r.exit_code == 1
    assert r.output.splitlines()[0].startswith("line 1: batch ") and "has no batch-end" in r.output


def test_audit_verify_needs_the_right_keys(logged, tmp_path):
    folder, log, lines = logged
    other = SoftwareKeys({n: (a, bytes(16), v) for n, (a, _, v) in keys()._masters.items()})
    assert all("keyed hash does not match" in p for p in _problems(folder, other)[:6])


def test_resume_refuses_to_write_into_a_cut_or_emptied_log(logged):
    folder, log, lines = logged
    log.write_text("".join(lines[:-2]))
    with pytest.raises(batch.BatchError, match="ends at line 4, but the journal recorded line 6: the log was cut"):
        batch.run_batch(_opts(folder, str(folder / "h.csv"), resume=True))
    log.write_text("")
    with pytest.raises(batch.BatchError, match="is empty, but the journal recorded lines of it"):
        batch.run_batch(_opts(folder, str(folder / "h.csv"), resume=True))


# ---- the property: any kills, any resumes, one card per valid cardholder ---------------------------------

POINTS = ("claimed", "perso", "saved", "audit-append")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kills=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 9)), max_size=4))
def test_any_kills_and_resumes_end_with_one_card_per_valid_cardholder(tmp_path_factory, monkeypatch, kills):
    folder = tmp_path_factory.mktemp("kills")
    holders = cardholders.generate(7, seed=12)
    invalid = dict(cardholders.generate(1, seed=12, start=90)[0], sex="7")
    duplicate = dict(cardholders.generate(1, seed=12, start=91)[0], card_number=holders[2]["card_number"] + " ")
    csv_path = _write(folder / "h.csv", holders[:4] + [invalid, duplicate] + holders[4:])

    for point, nth in kills + [(None, 0)]:
        seen = {"n": 0}

        def crash_at(name, point=point, nth=nth, seen=seen):
            if name == point:
                seen["n"] += 1
                if seen["n"] == nth:
                    raise Killed(name)

        monkeypatch.setattr(crash, "point", crash_at)
        resume = _done(folder) > 0 or (folder / "audit.jsonl").exists()
        try:
            result = batch.run_batch(_opts(folder, csv_path, resume=resume))
        except Killed:
            continue
    assert (result.done, result.rejected, result.pending, result.quarantined) == (7, 2, 0, 0)
    done = [e["card_number"] for e in _events(folder, "card-done")]
    assert sorted(done) == sorted(h["card_number"] for h in holders)             # every card once in the log
    db = sqlite3.connect(folder / "journal.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT card_number) FROM cards WHERE state = 'done'").fetchone() == (7, 7)
    assert sorted(p.stem for p in (folder / "cards").glob("*.json")) == sorted(h["card_number"] for h in holders)
    assert _problems(folder) == []


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kills=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 6)), min_size=1, max_size=2))
def test_real_sigkills_at_chosen_points_then_resume(tmp_path_factory, keyfile, kills):
    folder = tmp_path_factory.mktemp("sigkills")
    holders = cardholders.generate(5, seed=13)
    csv_path = _write(folder / "h.csv", holders)
    args = _run_args(folder, csv_path, keyfile)
    env = dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS)
    for point, nth in kills + [(None, 0)]:
        resume = ["--resume"] if (folder / "audit.jsonl").exists() else []
        run_env = dict(env, SSCARD_TEST_CRASH=f"{point}:{nth}") if point else env
        r = subprocess.run(args + resume, cwd=ROOT, env=run_env, capture_output=True, text=True)
        assert r.returncode in (0, -signal.SIGKILL), r.stderr
    assert r.returncode == 0, r.stderr
    assert sorted(e["card_number"] for e in _events(folder, "card-done")) == sorted(h["card_number"] for h in holders)
    assert _problems(folder) == []


# ---- 5, 6. dates, control characters, sex against the ID ------------------------------------------

RULES = cardholders.Rules(today=TODAY, issue_margin_days=31)


@pytest.mark.parametrize("field,value,why", [
    ("issue_date", "2025031", "exactly 8 digits"),
    ("issue_date", "202531", "exactly 8 digits"),
    ("expiry_date", "2035 0310", "exactly 8 digits"),
    ("birth_date", "18991231", "outside 1900..2099"),
    ("issue_date", "20260703", "more than 31 days after today (2026-06-01)"),
    ("pan_expiry", "340231", "real date YYMMDD"),
])
def test_dates_are_8_digits_real_and_plausible(field, value, why):
    problems = cardholders.check(dict(cardholders.sample(), **{field: value}), prof(), RULES)
    assert any(f == field and why in reason for f, reason in problems), problems


def test_issue_margin_is_configurable_and_birth_in_the_future_is_refused():
    late = dict(cardholders.sample(), issue_date="20260703")
    assert cardholders.check(late, prof(), cardholders.Rules(today=TODAY, issue_margin_days=40)) == []
    from applets.encoding import id_check_digit
    ssn17 = "33030220270101001"
    future = dict(cardholders.sample(), ssn=ssn17 + id_check_digit(ssn17), birth_date="20270101",
                  issue_date="20260515", expiry_date="20360515")
    problems = cardholders.check(future, prof(), RULES)
    assert ("birth_date", "2027-01-01 is in the future (today is 2026-06-01)") in problems


@pytest.mark.parametrize("field", ["name", "card_number", "region", "pan", "person_id"])
def test_control_characters_are_refused_in_every_field(field):
    holder = cardholders.sample()
    holder[field] = holder[field][:1] + "\x00" + holder[field][1:]
    problems = cardholders.check(holder, prof(), RULES)
    assert (field, "control character U+0000 at character 2") in problems


def test_a_nul_in_a_name_never_reaches_a_card():
    with pytest.raises(cardholders.HolderError, match="name: control character U\\+0000"):
        cardholders.values(dict(cardholders.sample(), name="张\x00小燕"), prof(), bytes(8), RULES)


def test_sex_must_agree_with_the_17th_digit_of_the_id():
    holder = cardholders.sample()                                        # 17th digit 1: a man
    assert holder["ssn"][16] == "1" and cardholders.check(holder, prof(), RULES) == []
    problems = cardholders.check(dict(holder, sex="2"), prof(), RULES)
    assert problems == [("sex", "is 2 (female) but the social security number's 17th digit 1 says 1 (male)")]
    assert cardholders.check(dict(holder, sex="9"), prof(), RULES) == []  # unstated contradicts nothing


def test_values_are_normalized_once_and_used_everywhere():
    raw = dict(cardholders.sample(), card_number=" a02796279\u3000", ssn="330302199003071215 ", name=" 张小燕 ",
               region="３３０３００")
    values = cardholders.values(raw, prof(), bytes(8), RULES)
    assert (values["card_number"], values["ssn"], values["name"], values["region"]) == \
        ("A02796279", "330302199003071215", "张小燕", "330300")


# ---- 7, 8. the cardholder file: stray quotes, encodings ---------------------------------------------

def test_a_stray_quote_spoils_only_its_own_line(tmp_path):
    holders = cardholders.generate(4, seed=14)
    path = Path(_write(tmp_path / "h.csv", holders))
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    name = holders[1]["name"]
    lines[2] = lines[2].replace("," + name + ",", ',"' + name + ",", 1)
    path.write_text("".join(lines), encoding="utf-8")
    rows = cardholders.read_csv(str(path))
    assert [line for line, _ in rows] == [2, 3, 4, 5]                        # no row swallowed
    problems = cardholders.check_all(rows, prof(), workers=1, rules=RULES)
    column = lines[2].index('"') + 1
    assert problems == {3: [("record", f"a quoted field opens at column {column} and does not close on this line "
                                       "(a stray \"?)")]}


def test_a_row_with_more_fields_than_the_header_is_not_silently_cut(tmp_path):
    path = Path(_write(tmp_path / "h.csv", cardholders.generate(2, seed=15)))
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1].rstrip("\n") + ",extra\n"
    path.write_text("".join(lines), encoding="utf-8")
    problems = cardholders.check_all(cardholders.read_csv(str(path)), prof(), workers=1, rules=RULES)
    n = lines[0].count(",") + 1
    assert problems == {2: [("record", f"{n + 1} fields where the header has {n}")]}


def test_a_gbk_file_is_named_by_line_and_column_and_reads_with_encoding_gbk(tmp_path):
    holders = cardholders.generate(3, seed=16, start=100)
    text = Path(_write(tmp_path / "u.csv", holders)).read_text(encoding="utf-8")
    gbk = tmp_path / "g.csv"
    gbk.write_bytes(text.encode("gbk"))
    with pytest.raises(cardholders.CsvError) as e:
        cardholders.read_csv(str(gbk))
    column = text.splitlines()[1].index(holders[0]["name"]) + 1
    byte = holders[0]["name"].encode("gbk")[0]
    assert str(e.value) == (f"{gbk}: line 2, column {column}: byte 0x{byte:02X} is not UTF-8; "
                            "the whole file reads as GBK: add --encoding gbk")
    assert [r for _, r in cardholders.read_csv(str(gbk), "gbk")] == \
        [r for _, r in cardholders.read_csv(str(tmp_path / "u.csv"))]
    r = cli("perso", "check", "--cardholders", str(gbk))
    assert r.exit_code == 2 and "line 2, column" in r.output and len(r.output.strip().splitlines()) == 1
    assert cli("perso", "check", "--cardholders", str(gbk), "--encoding", "gbk").exit_code == 0


# ---- 9. key files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604])
def test_a_key_file_others_can_read_is_refused_with_the_chmod(keyfile, mode):
    os.chmod(keyfile, mode)
    with pytest.raises(KeyFileError, match=rf"mode {mode:o}\); run: chmod 600 {keyfile}$"):
        load_key_file(keyfile, PASS)
    r = cli("keys", "list", keyfile)
    assert r.exit_code == 2 and f"chmod 600 {keyfile}" in r.output
    os.chmod(keyfile, 0o600)
    assert load_key_file(keyfile, PASS).names()


def test_new_key_files_are_0600_whatever_the_umask_and_need_a_strong_passphrase(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "k.json"
        (tmp_path / f".k.json.{os.getpid()}.tmp").write_text("stale")          # a crashed write's leftover
        os.chmod(tmp_path / f".k.json.{os.getpid()}.tmp", 0o666)
        r = cli("keys", "new", str(path))
        assert r.exit_code == 0 and (path.stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
    for weak in ("qz", "eleven char", "aaaabbbbaaaabbbb"):
        r = cli("keys", "new", str(tmp_path / "weak.json"), env={"SSCARD_KEYS_PASSPHRASE": weak})
        assert r.exit_code == 2 and "passphrase" in r.output and weak not in r.output
        assert not (tmp_path / "weak.json").exists()
    assert cli("keys", "new", str(tmp_path / "demo.json"), "--demo", env={"SSCARD_KEYS_PASSPHRASE": "1"}).exit_code == 0
    with pytest.raises(KeyFileError, match="at least 12"):
        save_key_file(tmp_path / "x.json", {}, "1")
