"""Several stations on one batch: the journal on SQLite and on PostgreSQL, claims with leases,
per-station audit logs checked against the journal."""

import pytest

pytestmark = pytest.mark.postgres


def test_the_throwaway_cluster_answers_and_goes_away_when_stopped():
    import psycopg

    from tests.pg_cluster import Cluster
    c = Cluster().start()
    try:
        with psycopg.connect(c.url) as db:
            assert db.execute("SELECT 1 + 1").fetchone() == (2,)
    finally:
        c.stop()
    assert not c.dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(c.url, connect_timeout=2)


import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personalize import cardholders
from personalize.journal import SCHEMA_VERSION, JournalError, open_journal
from tests.ss import key_file, keys, prof

ROOT = Path(__file__).resolve().parent.parent
PASS = "batch test passphrase"


@pytest.fixture
def keyfile(tmp_path):
    return key_file(tmp_path / "keys.json", PASS)


def _holders(tmp_path, n, bad=()):
    path = tmp_path / "holders.csv"
    cardholders.write_csv(str(path), cardholders.generate(n, seed=18) + list(bad))
    return str(path)


def _station(tmp_path, csv_path, keyfile, journal, name, lease=3.0, extra=(), restart=False):
    if journal.startswith("postgresql:") and restart or not journal.startswith("postgresql:") and _has_batch(journal):
        extra = (*extra, "--resume")              # a batch begun (or finished) already is taken up with --resume
    args = [sys.executable, "-m", "cli", "perso", "run", "--cardholders", csv_path, "--keys", keyfile,
            "--out-dir", str(tmp_path / "cards"), "--journal", journal, "--station", name, "--lease", str(lease),
            "--audit", str(tmp_path / f"audit-{name}.jsonl"), "--json", *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS))


def _has_batch(journal: str) -> bool:
    try:
        with sqlite3.connect(journal) as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def _verify(tmp_path, journal, keyfile):
    logs = sorted(str(p) for p in tmp_path.glob("audit-*.jsonl"))
    return subprocess.run([sys.executable, "-m", "cli", "audit", "verify", *logs, "--journal", journal,
                           "--keys", keyfile], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS))


def _kill_and_restart(tmp_path, csv_path, keyfile, journal, names, seed, rounds):
    """Stations run, are SIGKILLed at random moments and started again; then each runs once to the end."""
    rng = random.Random(seed)
    running = {n: _station(tmp_path, csv_path, keyfile, journal, n) for n in names}
    kills = 0
    for _ in range(rounds):
        time.sleep(rng.uniform(0.1, 0.9))
        victim = rng.choice(names)
        p = running[victim]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate()
        running[victim] = _station(tmp_path, csv_path, keyfile, journal, victim, restart=True)
    outs = {}
    for n, p in running.items():
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        outs[n] = json.loads(out)
    return kills, outs


def _check_end_state(tmp_path, journal_cards, valid, journal, keyfile):
    made = sorted(p.stem for p in (tmp_path / "cards").glob("*.json"))
    assert made == sorted(h["card_number"] for h in valid)                   # one card per valid cardholder
    done = [c for c in journal_cards if c.state == "done"]
    assert sorted(c.card_number for c in done) == made                       # every card number once
    assert len({c.ssn for c in done}) == len(done)
    assert not list((tmp_path / "cards").glob(".sscard-tmp.*"))
    r = _verify(tmp_path, journal, keyfile)
    assert r.returncode == 0, r.stdout + r.stderr                            # chains intact, every line present
    lines = [json.loads(x) for p in tmp_path.glob("audit-*.jsonl") for x in p.read_text().splitlines()]
    assert all(x["station"] and x["batch"] and x["seq"] for x in lines)
    assert {x["card_number"] for x in lines if x["event"] == "card-done"} == set(made)


def test_three_stations_on_postgresql_killed_and_restarted_make_each_card_once(tmp_path, keyfile, pg_url):
    bad = [dict(cardholders.sample(), ssn="330302199003071216")]
    holders = cardholders.generate(300, seed=18)
    csv_path = _holders(tmp_path, 300, bad)
    kills, outs = _kill_and_restart(tmp_path, csv_path, keyfile, pg_url, ["s1", "s2", "s3"], seed=7, rounds=12)
    assert kills >= 5, "the test must really kill stations"
    j = open_journal(pg_url)
    try:
        bid = outs["s1"]["batch"]
        assert j.counts(bid) == {"done": 300, "rejected": 1}
        stations = {c.station for c in j.cards(bid) if c.state == "done"}
        assert stations == {"s1", "s2", "s3"}                                 # the work really was shared
        _check_end_state(tmp_path, j.cards(bid), holders, pg_url, keyfile)
    finally:
        j.close()


def test_one_station_on_sqlite_killed_and_restarted_makes_each_card_once(tmp_path, keyfile):
    holders = cardholders.generate(300, seed=18)
    csv_path = _holders(tmp_path, 300)
    journal = str(tmp_path / "journal.sqlite")
    kills, outs = _kill_and_restart(tmp_path, csv_path, keyfile, journal, ["solo"], seed=3, rounds=6)
    assert kills >= 3, "the test must really kill the station"
    j = open_journal(journal)
    try:
        bid = outs["solo"]["batch"]
        assert j.counts(bid) == {"done": 300}
        _check_end_state(tmp_path, j.cards(bid), holders, journal, keyfile)
    finally:
        j.close()


def _two_at_once(tmp_path, keyfile, journal, delay):
    """Stations a and b on one new file, b started `delay` seconds after a (before it when negative)."""
    csv_path = _holders(tmp_path, 12)
    first, second = ("a", "b") if delay >= 0 else ("b", "a")
    started = {first: _station(tmp_path, csv_path, keyfile, journal, first)}
    time.sleep(abs(delay))
    started[second] = _station(tmp_path, csv_path, keyfile, journal, second)
    a, b = started["a"], started["b"]
    outs = [p.communicate(timeout=300) for p in (a, b)]
    return [p.returncode for p in (a, b)], outs


def _made_once(tmp_path, journal):
    j = open_journal(journal)
    try:
        (bid,) = j.batches()
        done = [c for c in j.cards(bid) if c.state == "done"]
        lines = [json.loads(x) for p in tmp_path.glob("audit-*.jsonl") for x in p.read_text().splitlines()]
        made = [x["card_number"] for x in lines if x["event"] == "card-done"]
        return len(done), len(made), len(set(made))
    finally:
        j.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(-0.6, 0.6))
def test_two_stations_started_together_on_postgresql_never_both_make_a_card(tmp_path_factory, keyfile, pg_cluster,
                                                                            delay):
    import uuid
    tmp_path = tmp_path_factory.mktemp("two")
    url = pg_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
    codes, outs = _two_at_once(tmp_path, keyfile, url, delay)
    # Both share the batch, or the second finds it finished already (a finished batch needs --resume). The
    # second is whichever reached the journal later: on a loaded machine "b" may record and finish the batch
    # before "a" has even started, so "a" may be the one told to add --resume.
    assert 0 in codes, outs
    for code, (_, err) in zip(codes, outs):
        assert code == 0 or "add --resume" in err, outs
    assert _made_once(tmp_path, url) == (12, 12, 12)        # every card made, and made by one station only


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(-0.6, 0.6))
def test_two_stations_started_together_on_sqlite_never_both_make_a_card(tmp_path_factory, keyfile, delay):
    tmp_path = tmp_path_factory.mktemp("two")
    journal = str(tmp_path / "journal.sqlite")
    codes, outs = _two_at_once(tmp_path, keyfile, journal, delay)
    # One owner at a time on SQLite: the second is refused naming the first, or finds the batch finished.
    for code, (out, err) in zip(codes, outs):
        assert code == 0 or "is in use by pid" in err or "add --resume" in err, err
    assert 0 in codes
    assert _made_once(tmp_path, journal) == (12, 12, 12)


def test_a_newer_journal_schema_is_refused_and_an_old_one_migrated(tmp_path, pg_url):
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.executescript("CREATE TABLE batches (id TEXT PRIMARY KEY, profile TEXT NOT NULL, profile_digest TEXT NOT NULL,"
                     " source TEXT NOT NULL, source_digest TEXT NOT NULL, started REAL NOT NULL, finished REAL);"
                     "CREATE TABLE cards (batch TEXT NOT NULL, row INTEGER NOT NULL, card_number TEXT NOT NULL, "
                     "ssn TEXT NOT NULL, state TEXT NOT NULL, step TEXT, target TEXT, atr TEXT, reason TEXT, "
                     "updated REAL NOT NULL, PRIMARY KEY (batch, row));"
                     "INSERT INTO cards VALUES ('b', 2, 'A1', 'S1', 'done', NULL, NULL, NULL, NULL, 0);")
    db.commit()
    db.close()
    j = open_journal(str(old))
    assert j.schema_version() == SCHEMA_VERSION and j.cards("b")[0].state == "done"
    j.close()
    for target in (str(old), pg_url):
        open_journal(target).close()
        if target == pg_url:
            import psycopg
            with psycopg.connect(pg_url, autocommit=True) as db:
                db.execute("UPDATE sscard_schema SET version = %s", (SCHEMA_VERSION + 1,))
        else:
            with sqlite3.connect(target) as db:
                db.execute("UPDATE sscard_schema SET version = ?", (SCHEMA_VERSION + 1,))
        with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1} is newer than this sscard"):
            open_journal(target)


def test_perso_status_per_station_and_overall(tmp_path, keyfile, pg_url):
    csv_path = _holders(tmp_path, 20, [dict(cardholders.sample(), sex="7")])
    ps = [_station(tmp_path, csv_path, keyfile, pg_url, n) for n in ("s1", "s2")]
    assert [p.communicate(timeout=300) and p.returncode for p in ps] == [0, 0]
    r = subprocess.run([sys.executable, "-m", "cli", "perso", "status", "--journal", pg_url, "--json"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (report,) = json.loads(r.stdout)
    assert (report["done"], report["rejected"], report["pending"], report["finished"]) == (20, 1, 0, True)
    assert sum(s["done"] for s in report["stations"]) == 20
    text = subprocess.run([sys.executable, "-m", "cli", "perso", "status", "--journal", pg_url], cwd=ROOT,
                          capture_output=True, text=True).stdout
    assert "20 done" in text and "1 rejected" in text and "finished" in text


def test_audit_verify_needs_every_station_log(tmp_path, keyfile, pg_url):
    csv_path = _holders(tmp_path, 30)
    ps = [_station(tmp_path, csv_path, keyfile, pg_url, n) for n in ("s1", "s2")]
    assert [p.communicate(timeout=300) and p.returncode for p in ps] == [0, 0]
    assert _verify(tmp_path, pg_url, keyfile).returncode == 0
    (tmp_path / "audit-s2.jsonl").rename(tmp_path / "elsewhere.jsonl")
    r = _verify(tmp_path, pg_url, keyfile)
    assert r.returncode != 0 and "audit-s2.jsonl: the journal holds lines of this log" in r.stdout


def test_a_dead_stations_card_goes_to_another_only_when_its_lease_runs_out(tmp_path, keyfile, pg_url):
    csv_path = _holders(tmp_path, 3)
    first = _station(tmp_path, csv_path, keyfile, pg_url, "s1")
    assert first.communicate(timeout=300) and first.returncode == 0
    j = open_journal(pg_url, station="dead")
    (bid,) = j.batches()
    with j._tx() as q:                                   # as if station "dead" was half-way through line 3
        q("UPDATE cards SET state = 'started', step = 'perso', station = 'dead', lease_until = {now} + 2 "
          "WHERE batch = ? AND row = 3", (bid,))
        q("UPDATE batches SET finished = NULL WHERE id = ?", (bid,))
    j.close()
    other = open_journal(pg_url, station="s2")
    assert other.claim(bid, lease=5) is None and other.held_by_others(bid) == 1     # the lease still runs
    other.close()
    second = _station(tmp_path, csv_path, keyfile, pg_url, "s2")                    # waits for it, then remakes it
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert json.loads(out)["made_now"] == 1
    j = open_journal(pg_url)
    assert {c.row: (c.state, c.station) for c in j.cards(bid)}[3] == ("done", "s2")
    j.close()
    assert _verify(tmp_path, pg_url, keyfile).returncode == 0


@pytest.mark.parametrize("step, end", [("perso", "quarantined"), ("claimed", "done")])
def test_a_dead_stations_real_card_is_quarantined_with_its_step_unless_no_apdu_was_sent(tmp_path, pg_url, step, end):
    from personalize import batch
    from personalize.audit import AuditLog
    csv_path = _holders(tmp_path, 3)
    opts = batch.Options(prof(), keys(), csv_path, pg_url, str(tmp_path / "audit-s2.jsonl"), str(tmp_path / "cards"),
                         station="s2")
    j = open_journal(pg_url, station="s2")
    _, _, bid, _ = batch.prepare(opts, j)
    with j._tx() as q:                                   # station "dead" was at a reader, in `step`, and died
        q("UPDATE cards SET state = 'started', step = ?, station = 'dead', target = 'Reader 0', lease_until = 0 "
          "WHERE batch = ? AND row = 2", (step, bid))
    audit = AuditLog(opts.audit, opts.keys.audit_mac, j, station="s2")
    station = batch.Station(opts, bid, j, audit, None)

    class AtAReader:                                     # what Station asks of a reader worker here
        remakes, where = False, {"reader": "Reader 1"}

        def open(self, c, ready):
            from personalize import cardwork, virtual
            from reader_bridge.transport import InProcess
            card = virtual.blank(opts.profile, virtual.chip_serial(f"{bid}:{c.row}"))
            return cardwork.Phases(InProcess(card), station.work), "Reader 1", {}

        def done(self, card):
            pass

    c = j.claim(bid, lease=30)
    assert (c.row, c.state, c.step, c.station) == (2, "started", step, "dead")
    station._take(c, AtAReader(), None)
    row = {x.row: x for x in j.cards(bid)}[2]
    assert (row.state, row.station) == (end, "s2")
    if end == "quarantined":
        assert row.reason.startswith("interrupted during perso at station dead")
    audit.close()
    lines = [json.loads(x) for x in Path(opts.audit).read_text().splitlines()]
    assert lines[-1]["event"] == f"card-{'quarantined' if end == 'quarantined' else 'done'}"
    assert lines[-1]["station"] == "s2" and lines[-1]["batch"] == bid
    j.close()


# ---- two stations opening one new batch, driven step by step (threads, one journal connection each) ----

def _opener(tmp_path, csv_path, pg_url, name):
    """A station's batch options and journal, and a thread that opens the batch the way `perso run` does."""
    import threading

    from personalize import batch
    opts = batch.Options(prof(), keys(), csv_path, pg_url, str(tmp_path / f"audit-{name}.jsonl"),
                         str(tmp_path / "cards"), station=name, workers=1)
    j = open_journal(pg_url, station=name)
    got: dict = {}

    def run():
        try:
            got["opened"] = batch._open_batch(opts, j)
        except Exception as e:               # noqa: BLE001 - the test asserts on it
            got["error"] = e
    return j, got, threading.Thread(target=run, name=f"open:{name}", daemon=True)


def _pause_before_commit(monkeypatch, station: str):
    """The named station stops after naming its new batch, its transaction still open, until the event is set."""
    import threading

    from personalize import journal as jmod
    named, go = threading.Event(), threading.Event()
    real = jmod._NewBatch.name

    def name(self, batch_id, source_digest):
        done = real(self, batch_id, source_digest)
        if self.journal.station == station:
            named.set()
            assert go.wait(120), "the test never let the station go on"
        return done
    monkeypatch.setattr(jmod._NewBatch, "name", name)
    return named, go


def _waits_on_a_lock(pg_url, station: str) -> None:
    """Until the named station's database session waits for a lock another transaction holds."""
    import psycopg
    with psycopg.connect(pg_url, autocommit=True) as db:
        for _ in range(1200):
            if db.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s AND wait_event_type = "
                          "'Lock'", (f"sscard station {station} %",)).fetchone():
                return
            time.sleep(0.05)
    raise AssertionError(f"station {station} never waited for the other's transaction")


@contextmanager
def _b_waiting_on_a(tmp_path, pg_url, monkeypatch, file_a, file_b):
    """Station a records file_a and stops before its commit; b starts on file_b and must wait on a's
    transaction; then a goes on. Yields what each opened, and b's journal."""
    named, go = _pause_before_commit(monkeypatch, "a")
    ja, a, ta = _opener(tmp_path, file_a, pg_url, "a")
    jb, b, tb = _opener(tmp_path, file_b, pg_url, "b")
    try:
        ta.start()
        assert named.wait(120)
        tb.start()
        _waits_on_a_lock(pg_url, "b")                       # b read its file and is blocked on a's transaction
        go.set()
        ta.join(120)
        tb.join(120)
        assert "error" not in a and "error" not in b, (a, b)
        yield a, b, jb
    finally:
        go.set()
        ja.close()
        jb.close()


def _one_batch_and_no_provisional(pg_url, n_cards):
    j = open_journal(pg_url)
    try:
        (bid,) = j.batches()                                # no provisional batch left, none half-written
        assert len(j.cards(bid)) == n_cards
        with j._tx() as q:
            assert q("SELECT COUNT(*) FROM cards WHERE batch != ?", (bid,)).fetchone()[0] == 0
        return bid
    finally:
        j.close()


@pytest.mark.parametrize("invalid", [False, True], ids=["valid-rows", "every-row-rejected"])
def test_a_station_recording_the_same_new_batch_behind_another_joins_it_when_the_first_commits(
        tmp_path, pg_url, monkeypatch, invalid):
    # Valid rows: the second station's first row waits on the first's uncommitted card number. Every row
    # rejected: nothing is indexed, so both get as far as naming the batch, the very check-then-rename race.
    bad = [dict(cardholders.sample(), ssn="1", card_number=f"X{i}") for i in range(4)] if invalid else []
    csv_path = str(tmp_path / "holders.csv")
    cardholders.write_csv(csv_path, bad or cardholders.generate(6, seed=18))
    with _b_waiting_on_a(tmp_path, pg_url, monkeypatch, csv_path, csv_path) as (a, b, _):
        assert a["opened"][0] == b["opened"][0]             # b joins a's batch
        assert a["opened"][2] is None and b["opened"][3] is None
        assert _one_batch_and_no_provisional(pg_url, len(bad) or 6) == a["opened"][0]


def test_a_station_recording_a_file_that_shares_a_cardholder_with_one_being_recorded_rejects_that_line(
        tmp_path, pg_url, monkeypatch):
    # Two different files started together share one cardholder: the second waits on the first's uncommitted
    # card number. Once the first is recorded, the line is the second's duplicate, as if it had come later.
    people = cardholders.generate(9, seed=18)
    first, second = str(tmp_path / "first.csv"), str(tmp_path / "second.csv")
    cardholders.write_csv(first, people[:5])
    cardholders.write_csv(second, people[4:])               # line 2 is the first file's line 6
    with _b_waiting_on_a(tmp_path, pg_url, monkeypatch, first, second) as (a, b, jb):
        assert a["opened"][0] != b["opened"][0]
        theirs = {c.row: c for c in jb.cards(b["opened"][0])}
        assert len(theirs) == 5 and theirs[2].state == "rejected"
        assert "already issued in an earlier batch" in theirs[2].reason
        assert [c.state for r, c in sorted(theirs.items()) if r != 2] == ["pending"] * 4
        assert Path(b["opened"][3]).read_text().count("already") == 2     # card number and SSN, in the reject file
        assert sorted(jb.batches()) == sorted([a["opened"][0], b["opened"][0]])   # no provisional batch left


def test_a_new_sqlite_journal_opened_while_another_station_writes_it_waits_for_it(tmp_path, monkeypatch):
    # Two stations started together on a new SQLite journal: switching the file to WAL while the other holds a
    # write lock fails at once in SQLite, without waiting (it would rather not risk a deadlock).
    from personalize import journal as jmod
    path = str(tmp_path / "journal.sqlite")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waited = []

    def sleep(seconds):                                     # the other station's write ends while this one waits
        waited.append(seconds)
        if other.in_transaction:
            other.execute("COMMIT")
    monkeypatch.setattr(jmod.time, "sleep", sleep)
    j = open_journal(path, station="b")
    try:
        assert waited and j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert j.schema_version() == SCHEMA_VERSION
    finally:
        j.close()
        other.close()


def test_a_station_that_found_no_batch_then_read_a_file_another_recorded_meanwhile_joins_it(tmp_path, pg_url):
    # b looks for the file's name before a has recorded it, and reads the file after: every line is then a's, the
    # batch is a's by its digest, and b's provisional batch is never written.
    csv_path = _holders(tmp_path, 6)
    ja, a, ta = _opener(tmp_path, csv_path, pg_url, "a")
    jb, b, tb = _opener(tmp_path, csv_path, pg_url, "b")
    real = jb.has_source

    def after_a(*args):
        found = real(*args)
        ta.start()
        ta.join(120)
        return found
    jb.has_source = after_a
    try:
        tb.start()
        tb.join(120)
        assert "error" not in a and "error" not in b, (a, b)
        assert b["opened"][0] == a["opened"][0] and b["opened"][2] is not None     # b joins a's running batch
        assert _one_batch_and_no_provisional(pg_url, 6) == a["opened"][0]
        assert not list(tmp_path.glob(".rejects-*")) and not list(tmp_path.glob("rejects-*"))
    finally:
        ja.close()
        jb.close()


# ---- a station that vanishes mid-transaction ----

def _lock_waiter(db, station: str) -> bool:
    return db.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s AND wait_event_type = 'Lock'",
                      (f"sscard station {station} %",)).fetchone() is not None


def _sessions(pg_url, station: str) -> int:
    import psycopg
    with psycopg.connect(pg_url, autocommit=True) as db:
        return db.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                          (f"sscard station {station} %",)).fetchone()[0]


def test_a_station_frozen_while_recording_is_ended_by_the_server_and_another_makes_the_batch(
        tmp_path, keyfile, pg_url, monkeypatch):
    # Station a works (statement after statement) until b waits on its uncommitted rows, then freezes with its
    # transaction open, its connection never closed: the server ends a's session, b records the file and makes
    # every card.
    import psycopg

    from personalize import journal as jmod
    monkeypatch.setattr(jmod, "IDLE_IN_TRANSACTION", 1.0)   # a's session only: b is a process of its own
    csv_path = _holders(tmp_path, 6)
    real, frozen, go = jmod._NewBatch.name, __import__("threading").Event(), __import__("threading").Event()

    def name(self, batch_id, source_digest):
        done = real(self, batch_id, source_digest)
        with psycopg.connect(pg_url, autocommit=True) as db:
            while not _lock_waiter(db, "b"):
                self.q("SELECT pg_sleep(0.05)")             # healthy: never idle as long as the server allows
        frozen.set()
        go.wait(300)
        return done
    monkeypatch.setattr(jmod._NewBatch, "name", name)
    ja, a, ta = _opener(tmp_path, csv_path, pg_url, "a")
    ta.start()
    b = _station(tmp_path, csv_path, keyfile, pg_url, "b")
    try:
        try:
            out, err = b.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("station b still waits on the frozen station's transaction") from None
        assert frozen.is_set()
        assert b.returncode == 0, err
        assert _sessions(pg_url, "a") == 0                  # the server ended the frozen session
        assert _made_once(tmp_path, pg_url) == (6, 6, 6)
    finally:
        if b.poll() is None:
            b.kill()
            b.communicate()
        go.set()
        ta.join(60)
        ja._db.close()
    assert "error" in a                                     # a, woken, finds its session gone: nothing of it kept


def test_a_station_waiting_on_a_session_left_idle_in_its_transaction_stops_naming_it(tmp_path, pg_url, monkeypatch):
    # A session without a station's settings (an administrator's, an older sscard's) holds a cardholder of the
    # file in a transaction left open: the station stops in one line naming it, nothing of its own written.
    import psycopg

    from personalize import journal as jmod
    monkeypatch.setattr(jmod, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(jmod, "IDLE_IN_TRANSACTION", 0.5)
    csv_path = _holders(tmp_path, 6)
    person = cardholders.generate(6, seed=18)[2]
    open_journal(pg_url).close()                            # the schema
    other = psycopg.connect(pg_url, application_name="admin console")
    other.execute("INSERT INTO cards (batch, row, card_number, ssn, state, updated) VALUES ('by hand', 1, %s, %s, "
                  "'pending', 0)", (person["card_number"], person["ssn"]))
    jb, b, tb = _opener(tmp_path, csv_path, pg_url, "b")
    try:
        tb.start()
        tb.join(120)
        assert not tb.is_alive(), "station b still waits on the idle session"
        assert isinstance(b.get("error"), JournalError), b
        message = str(b["error"])
        assert "\n" not in message and "admin console" in message and "station b" in message
        with psycopg.connect(pg_url, autocommit=True) as db:
            assert db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
        assert not list(tmp_path.glob(".rejects-*")) and not list(tmp_path.glob("rejects-*"))
    finally:
        other.close()
        tb.join(60)
        jb.close()
