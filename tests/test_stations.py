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
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personalize import batch, cardholders
from personalize.journal import SCHEMA_VERSION, JournalError, open_journal
from personalize.keys import KeyRef, save_key_file
from tests.ss import keys, prof

ROOT = Path(__file__).resolve().parent.parent
PASS = "batch test passphrase"


@pytest.fixture
def keyfile(tmp_path):
    provider = keys()
    path = tmp_path / "keys.json"
    save_key_file(path, {n: (provider.algorithm(KeyRef(n)), provider.value_for_plain_load(KeyRef(n)), 1)
                         for n in provider.names()}, PASS)
    return str(path)


def _holders(tmp_path, n, bad=()):
    path = tmp_path / "holders.csv"
    cardholders.write_csv(str(path), cardholders.generate(n, seed=18) + list(bad))
    return str(path)


def _station(tmp_path, csv_path, keyfile, journal, name, lease=3.0, extra=()):
    args = [sys.executable, "-m", "cli", "perso", "run", "--cardholders", csv_path, "--keys", keyfile,
            "--out-dir", str(tmp_path / "cards"), "--journal", journal, "--station", name, "--lease", str(lease),
            "--audit", str(tmp_path / f"audit-{name}.jsonl"), "--json", *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS))


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
        time.sleep(rng.uniform(0.2, 1.5))
        victim = rng.choice(names)
        p = running[victim]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate()
        running[victim] = _station(tmp_path, csv_path, keyfile, journal, victim)
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
    assert kills >= 6, "the test must really kill stations"
    j = open_journal(pg_url)
    try:
        bid = outs["s1"]["batch"]
        assert j.counts(bid) == {"done": 300, "rejected": 1}
        stations = {c.station for c in j.cards(bid) if c.state == "done"}
        assert stations == {"s1", "s2", "s3"}                                 # the work really was shared
        _check_end_state(tmp_path, j.cards(bid), holders, pg_url, keyfile)
    finally:
        j.close()
