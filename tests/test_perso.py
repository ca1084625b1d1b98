"""Personalization: phases, batches, journal and resume, rejects, audit, and secrets kept out."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cardos import image
from cli import main
from personalize import batch, cardholders, compiler, virtual
from personalize.audit import verify
from personalize.journal import open_journal
from personalize.keys import KeyRef
from personalize.profile import ProfileError, build, load
from personalize.script import render, run
from reader_bridge.transport import InProcess
from terminal.factors import card_factor
from tests.ss import done_cards, key_file, keys, prof

ROOT = Path(__file__).resolve().parent.parent
PASS = "batch test passphrase"


@pytest.fixture
def keyfile(tmp_path):
    return key_file(tmp_path / "keys.json", PASS)


def checked(audit, journal, provider=None):
    """`verify` of an audit log against its journal under the test keys: (lines, problems)."""
    j = open_journal(str(journal), create=False)
    try:
        return verify(audit, (provider or keys()).audit_mac, j)
    finally:
        j.close()


def cli(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, env={"SSCARD_KEYS_PASSPHRASE": PASS},
                              catch_exceptions=False)


# ---- the two phases -------------------------------------------------------------------------

def test_init_and_perso_scripts_make_the_same_card_as_image_new(tmp_path, keyfile):
    made = tmp_path / "new.json"
    assert cli("image", "new", str(made), "--keys", keyfile).exit_code == 0
    reference = image.load(made)
    printed = cli("perso", "script", "init").output.splitlines()
    script = compiler.init_script(prof())
    assert printed[1:] == render(script)                     # what is printed is what is run
    holder = cardholders.sample()
    card = virtual.blank(prof(), virtual.chip_serial(holder["card_number"]))
    run(InProcess(card).transmit, script, keys())
    card.power_on()
    values = cardholders.values(holder, prof(), card_factor(card.atr))
    perso = compiler.perso_script(prof(), values, card_factor(card.atr))
    assert len(cli("perso", "script", "perso").output.splitlines()) == len(render(perso)) + 1
    run(InProcess(card).transmit, perso, keys())
    card.power_on()
    assert card.store.data == reference.store.data            # every file, record, key and counter
    assert card.config == reference.config


def test_printed_scripts_hide_secrets_unless_revealed(keyfile):
    text = cli("perso", "script", "perso").output
    assert "张小燕".encode("gbk").hex().upper() not in text and "123456" not in text.replace("0084000008", "")
    shown = cli("perso", "script", "init", "--keys", keyfile, "--reveal").output
    transport = keys().value_for_plain_load(KeyRef("TRANSPORT")).hex().upper()
    assert transport in shown and transport not in cli("perso", "script", "init").output


def test_perso_init_onto_a_blank_image_then_a_batch_card_reads_back(tmp_path, keyfile):
    blank = tmp_path / "blank.json"
    assert cli("image", "new", "--blank", str(blank)).exit_code == 0
    r = cli("perso", "init", "--image", str(blank), "--keys", keyfile)
    assert r.exit_code == 0 and "all 9000" in r.output
    card = image.load(blank)
    card.power_on()
    assert card.fs.exists((0x3F00, 0xDDF1, 0xEF06))


# ---- data preparation -----------------------------------------------------------------------

BAD = {
    "ssn": ("330302199003071216", "check character"),
    "name": ("张\U0001F600", "not in GBK"),
    "sex": ("3", "must be 1"),
    "ethnicity": ("77", "GB 3304"),
    "birthplace": ("9999", "region code"),
    "birth_date": ("19900230", "real date"),
    "issue_date": ("19800101", "before the birth date"),
    "expiry_date": ("20200101", "after the issue date"),
    "card_number": ("A02796278", "check character"),
    "region": ("33030", "region code"),
    "init_org": ("ORG", "digits"),
    "pan_expiry": ("341301", "YYMMDD"),
    "pan": ("6217990000001234567", "Luhn"),
}


@pytest.mark.parametrize("field", sorted(BAD))
def test_every_invalid_record_class_is_rejected_with_its_reason(field):
    value, why = BAD[field]
    problems = cardholders.check(dict(cardholders.sample(), **{field: value}), prof())
    assert any(f == field and why in reason for f, reason in problems), problems


def test_missing_fields_long_names_and_duplicates():
    h = cardholders.sample()
    assert ("name", "missing") in cardholders.check(dict(h, name=""), prof())
    assert any(f == "name" for f, _ in cardholders.check(dict(h, name="张" * 26), prof()))
    assert any(f == "name" for f, _ in cardholders.check(dict(h, name="张" * 16), load("ss-1.00")))  # no 4E on 1.00
    rows = [(2, h), (3, dict(h)), (4, dict(h, card_number="X00000019", ssn="11010519491231002X", birth_date="19491231", sex="2"))]
    problems = cardholders.check_all(rows, prof(), workers=1)
    assert problems[3] == [("ssn", "duplicate of line 2"), ("card_number", "duplicate of line 2")] and 4 not in problems


def test_the_streaming_check_of_a_file_finds_what_check_all_finds(tmp_path):
    holders = cardholders.generate(5000, seed=12)
    holders[10] = dict(holders[10], sex="7")
    holders[4000] = dict(holders[3], name=holders[4000]["name"])                 # duplicate SSN and card number
    holders[4500] = dict(holders[4500], card_number=holders[20]["card_number"])  # duplicate card number only
    path = str(tmp_path / "h.csv")
    cardholders.write_csv(path, holders)
    expected = cardholders.check_all(cardholders.read_csv(path), prof(), workers=1)
    assert len(expected) == 3
    for workers in (1, 2):
        assert cardholders.check_file_all(path, prof(), workers=workers) == (5000, expected)


def test_check_all_uses_worker_processes_and_agrees():
    rows = [(i + 2, h) for i, h in enumerate(cardholders.generate(2500, seed=9))]
    rows[100] = (102, dict(rows[100][1], sex="7"))
    assert cardholders.check_all(rows, prof(), workers=2, chunk=500) == {102: [("sex", "must be 1 (male), 2 (female), 0 or 9")]}


# ---- batches --------------------------------------------------------------------------------

def _csv(tmp_path, n, seed=5, extra=()):
    path = tmp_path / "holders.csv"
    cardholders.write_csv(str(path), cardholders.generate(n, seed=seed) + list(extra))
    return str(path)


def _opts(tmp_path, csv_path, **kw):
    out = tmp_path / "cards"
    return batch.Options(prof(), keys(), csv_path, str(tmp_path / "journal.sqlite"), str(tmp_path / "audit.jsonl"),
                         str(out), **kw)


def test_a_batch_of_200_cards_into_images(tmp_path):
    bad = dict(cardholders.sample(), ssn="330302199003071216")
    opts = _opts(tmp_path, _csv(tmp_path, 200, extra=[bad]))
    result = batch.run_batch(opts)
    assert (result.done, result.rejected, result.quarantined, result.pending) == (200, 1, 0, 0)
    files = sorted((tmp_path / "cards").glob("*.json"))
    assert len(files) == 200
    card = image.load(files[17])
    card.power_on()
    from personalize.readout import read_card
    r = read_card(InProcess(card), prof())
    assert r.items["card_number"] == files[17].stem and r.life["ssse"] == "issued"
    rejects = Path(result.rejects_file).read_text()
    assert "202,ssn,check character should be" in rejects
    n, problems = checked(opts.audit, opts.journal)
    assert problems == [] and n == 202                           # start, 200 cards, end
    again = batch.run_batch(_opts(tmp_path, opts.cardholder_file, resume=True))
    assert again.made_now == 0 and again.done == 200


def test_strict_refuses_the_whole_batch_and_a_rerun_needs_resume(tmp_path):
    bad = dict(cardholders.sample(), sex="5")
    csv_path = _csv(tmp_path, 5, extra=[bad])
    with pytest.raises(batch.BatchError, match="--strict: 1 of 6"):
        batch.run_batch(_opts(tmp_path, csv_path, strict=True))
    assert not (tmp_path / "cards").exists() or not list((tmp_path / "cards").glob("*.json"))
    batch.run_batch(_opts(tmp_path, csv_path))
    with pytest.raises(batch.BatchError, match="--resume"):
        batch.run_batch(_opts(tmp_path, csv_path))


def test_strict_with_every_record_valid_personalizes_every_card(tmp_path):
    csv_path = _csv(tmp_path, 5)
    result = batch.run_batch(_opts(tmp_path, csv_path, strict=True))
    assert (result.done, result.rejected, result.pending, result.made_now) == (5, 0, 0, 5)
    assert len(list((tmp_path / "cards").glob("*.json"))) == 5


def _reads_of(path: str, monkeypatch) -> dict:
    """Every open of `path` and every byte read from it, from now on."""
    import builtins
    import io
    seen = {"opens": 0, "bytes": 0}
    real_open = builtins.open

    class Counted(io.FileIO):
        def readinto(self, buffer):
            n = super().readinto(buffer)
            seen["bytes"] += n or 0
            return n

    def counting_open(file, mode="r", *args, **kw):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == os.path.abspath(path):
            seen["opens"] += 1
            raw = io.BufferedReader(Counted(file, "r"))
            return raw if "b" in mode else io.TextIOWrapper(raw, *args, **kw)
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    return seen


def test_a_new_batch_reads_its_cardholder_file_once(tmp_path, monkeypatch):
    import hashlib
    csv_path = _csv(tmp_path, 30, extra=[dict(cardholders.sample(), sex="5")])
    seen = _reads_of(csv_path, monkeypatch)
    result = batch.run_batch(_opts(tmp_path, csv_path, workers=1))
    monkeypatch.undo()
    assert (result.done, result.rejected) == (30, 1)
    assert seen == {"opens": 1, "bytes": os.path.getsize(csv_path)}           # hashed, parsed and checked at once
    # Recorded under the id the whole file's digest gives, the provisional one gone.
    src = hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
    assert result.batch == batch.batch_id(prof(), src)
    j = open_journal(str(tmp_path / "journal.sqlite"))
    try:
        assert j.batches() == [result.batch] and j.batch(result.batch)["source_digest"] == src
        assert len(j.cards(result.batch)) == 31
    finally:
        j.close()
    assert Path(result.rejects_file).name == f"rejects-{result.batch}.csv"


def test_resume_finds_the_batch_by_its_files_digest_and_refuses_a_changed_file(tmp_path, monkeypatch):
    csv_path = _csv(tmp_path, 4)
    first = batch.run_batch(_opts(tmp_path, csv_path, workers=1))
    seen = _reads_of(csv_path, monkeypatch)
    again = batch.run_batch(_opts(tmp_path, csv_path, resume=True, workers=1))
    monkeypatch.undo()
    assert (again.batch, again.made_now, again.done) == (first.batch, 0, 4)
    assert seen == {"opens": 1, "bytes": os.path.getsize(csv_path)}           # hashed once to find it
    with pytest.raises(batch.BatchError, match=f"batch {first.batch} is in the journal already; add --resume"):
        batch.run_batch(_opts(tmp_path, csv_path, workers=1))
    with open(csv_path, "a", encoding="utf-8") as f:
        f.write("\n")                                        # the same records, but not the file the batch was made of
    with pytest.raises(batch.BatchError, match="nothing to resume: the journal has no batch"):
        batch.run_batch(_opts(tmp_path, csv_path, resume=True, workers=1))


def test_card_numbers_are_never_issued_twice_across_batches(tmp_path):
    first = _csv(tmp_path, 3, seed=1)
    batch.run_batch(_opts(tmp_path, first))
    again = tmp_path / "again.csv"
    holders = cardholders.generate(3, seed=1)[:1] + cardholders.generate(2, seed=2, start=50)
    cardholders.write_csv(str(again), holders)
    result = batch.run_batch(_opts(tmp_path, str(again)))
    assert (result.done, result.rejected) == (2, 1)
    assert "already issued in an earlier batch" in Path(result.rejects_file).read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_an_authentication_failure_quarantines_the_card_and_failures_stop_the_batch(tmp_path, workers):
    from personalize.keys import SoftwareKeys
    wrong = dict(keys()._masters)
    wrong["FACTORY"] = (wrong["FACTORY"][0], bytes(16), 1)       # not the blank chips' factory key
    opts = _opts(tmp_path, _csv(tmp_path, 6), workers=workers)
    opts.keys = SoftwareKeys(wrong)
    result = batch.run_batch(opts)
    # The third failure in a row stops the station; a card another worker had in hand then still ends.
    assert 3 <= result.quarantined <= 3 + workers - 1
    assert result.done == 0 and result.pending == 6 - result.quarantined
    assert "stopped" in result.stopped
    assert all("authentication failure: not retried" in q["reason"] for q in result.quarantine)
    n, problems = checked(opts.audit, opts.journal, opts.keys)
    assert not problems


def _run_cli_batch(tmp_path, csv_path, keyfile, resume):
    args = [sys.executable, "-m", "cli", "perso", "run", "--cardholders", csv_path, "--keys", keyfile,
            "--out-dir", str(tmp_path / "cards"), "--json"] + (["--resume"] if resume else [])
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS))


def test_sigkill_at_random_points_then_resume_gives_the_same_cards(tmp_path, keyfile):
    csv_path = _csv(tmp_path, 60, seed=11)
    ref = tmp_path / "ref"
    ref.mkdir()
    reference = batch.run_batch(_opts(ref, csv_path))
    assert reference.done == 60
    rng = random.Random(4)
    kills, resume = 0, False
    for _ in range(30):
        p = _run_cli_batch(tmp_path, csv_path, keyfile, resume)
        # Killed at whatever moment it has reached after a random number of further cards: as
        # many kills on a fast machine as on a slow one, never a wall-clock guess.
        target = _done_cards(tmp_path / "cards") + rng.randint(1, 12)
        while p.poll() is None and _done_cards(tmp_path / "cards") < target:
            time.sleep(rng.uniform(0.001, 0.03))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate()
        resume = (tmp_path / "cards" / "perso-journal.sqlite").exists() and _has_batch(tmp_path / "cards")
        if p.returncode == 0:
            break
    else:
        p = _run_cli_batch(tmp_path, csv_path, keyfile, resume)
        p.communicate()
    final = _run_cli_batch(tmp_path, csv_path, keyfile, True)
    out, err = final.communicate()
    summary = json.loads(out)
    assert kills >= 3, "the test must really interrupt the batch"
    assert (summary["done"], summary["pending"], summary["quarantined"]) == (60, 0, 0)
    made = {p.name: p.read_bytes() for p in (tmp_path / "cards").glob("*.json")}
    expected = {p.name: p.read_bytes() for p in (ref / "cards").glob("*.json")}
    assert made == expected                                       # the same cards, byte for byte
    db = sqlite3.connect(tmp_path / "cards" / "perso-journal.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT card_number) FROM cards").fetchone() == (60, 60)
    n, problems = checked(tmp_path / "cards" / "perso-audit.jsonl", tmp_path / "cards" / "perso-journal.sqlite")
    assert problems == []
    assert not list((tmp_path / "cards").glob(".sscard-tmp.*"))            # a killed save's leftovers are cleaned


def _done_cards(folder: Path) -> int:
    return done_cards(folder / "perso-journal.sqlite")


def _has_batch(folder: Path) -> bool:
    try:
        db = sqlite3.connect(folder / "perso-journal.sqlite")
        return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def test_no_pin_or_key_reaches_journal_audit_or_json(tmp_path, keyfile):
    csv_path = _csv(tmp_path, 5)
    out = tmp_path / "cards"
    r = cli("perso", "run", "--cardholders", csv_path, "--keys", keyfile, "--out-dir", str(out), "--json")
    assert r.exit_code == 0
    provider = keys()
    secrets = {provider.value_for_plain_load(KeyRef(n)).hex().upper() for n in provider.names()}
    factors = [card_factor(image.load(p).atr) for p in out.glob("*.json")]
    for _, df in prof().walk():
        for k in df.keys:
            if k.master:
                secrets |= {provider.value_for_plain_load(KeyRef(k.master, f)).hex().upper() for f in factors}
    pins = {"123456", "888888"}
    journal_dump = "\n".join(str(row) for row in sqlite3.connect(out / "perso-journal.sqlite").iterdump()).upper()
    texts = {"journal": journal_dump, "audit": (out / "perso-audit.jsonl").read_text().upper(), "json": r.output.upper()}
    for where, text in texts.items():
        assert not any(s in text for s in secrets), f"a key value in the {where}"
        for pin in pins:
            assert f'"{pin}"' not in text and f"'{pin}'" not in text and f"{pin}F" not in text, f"a PIN in the {where}"


def test_audit_verify_catches_an_edited_or_removed_line(tmp_path, keyfile):
    opts = _opts(tmp_path, _csv(tmp_path, 4))
    batch.run_batch(opts)
    log = Path(opts.audit)
    lines = log.read_text().splitlines(keepends=True)
    args = ("audit", "verify", str(log), "--journal", opts.journal, "--keys", keyfile)
    assert cli(*args).exit_code == 0
    edited = lines[:]
    edited[2] = edited[2].replace('"personalized"', '"PERSONALIZED"')
    log.write_text("".join(edited))
    r = cli(*args)
    assert r.exit_code != 0 and "line 3: its keyed hash does not match" in r.output
    log.write_text("".join(lines[:2] + lines[3:]))
    r = cli(*args)
    assert r.exit_code != 0 and "line 3: does not follow line 2" in r.output


# ---- profiles -------------------------------------------------------------------------------

def test_profile_errors_name_the_place(tmp_path):
    doc = dict(prof().source)
    big = json.loads(json.dumps(doc))
    big["cos"]["capacity"] = 16384
    with pytest.raises(ProfileError, match=r"the layout needs \d+ bytes of EEPROM, the card has 16384"):
        build(big)
    bad = json.loads(json.dumps(doc))
    bad["tree"]["dfs"][0]["files"][1]["records"][2]["format"] = "hex"
    with pytest.raises(ProfileError, match=r"tree\.dfs\[0\]\.files\[1\]\.records\[2\]\.format: 'hex'"):
        build(bad)
    bad = json.loads(json.dumps(doc))
    bad["tree"]["dfs"][0]["files"][1]["read"] = "key:99"
    with pytest.raises(ProfileError, match=r"tree\.dfs\[0\]\.files\[1\]\.read: .*unknown credential 'key:99'"):
        build(bad)
    ssf = json.loads(json.dumps(doc))
    ssf["cos"]["algorithm"] = "ssf33"
    with pytest.raises(ProfileError, match="SSF33 is not public"):
        build(ssf)
    p = tmp_path / "p.yaml"
    p.write_text("extends: default\nname: x\noverride:\n  DDF1/EF99: {read: always}\n")
    with pytest.raises(ProfileError, match="no DF or file EF99"):
        load(str(p))


@pytest.mark.parametrize("name", ["default", "sm4-3.00"])
def test_a_printed_external_authenticate_has_the_lc_the_run_sends(name):
    # An SM4 cryptogram is 16 bytes: the script must not say Lc 08 for it.
    from tests.ss import prof as profile_named
    p = profile_named(name)
    card = virtual.blank(p, virtual.chip_serial("lc"))
    log = run(InProcess(card).transmit, compiler.init_script(p), virtual.demo_issuer_keys(p))
    sent = [ex.apdu[:5].hex().upper() for ex in log if ex.apdu[1] == 0x82]
    printed = [line[:10] for line in cli("perso", "script", "init", "--profile", name).output.splitlines()
               if line.startswith("008200")]
    assert sent and printed == sent
