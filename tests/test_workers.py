"""Card worker processes (issue 21): a batch into images on several processes makes exactly the cards, journal
and audit log one process makes, and a station killed with its workers resumes to one card per cardholder."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from personalize import batch, cardholders, cardwork
from personalize.audit import verify
from personalize.journal import open_journal
from tests.ss import done_cards, key_file, keys, prof

ROOT = Path(__file__).resolve().parent.parent
PASS = "workers test passphrase"

# What may differ between two runs of one batch: when (time; the chain's hashes and links, which cover the
# time; each log's random id) and where (the output folder, in `target`). Nothing names a worker or a pid.
AUDIT_VARIES = {"time", "hash", "prev", "log", "seq"}
JOURNAL_TIMES = ("updated", "claimed", "lease_until")


def _run(folder: Path, csv_path: str, workers: int, resume: bool = False) -> batch.Result:
    folder.mkdir(exist_ok=True)
    opts = batch.Options(prof(), keys(), csv_path, str(folder / "journal.sqlite"), str(folder / "audit.jsonl"),
                         str(folder / "cards"), station="s", workers=workers, resume=resume)
    return batch.run_batch(opts)


def _images(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "cards").iterdir())}


def _journal(folder: Path) -> tuple[list, list]:
    db = sqlite3.connect(folder / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        batches = [{k: r[k] for k in r.keys() if k not in ("started", "finished")}
                   for r in db.execute("SELECT * FROM batches")]
        cards = [{k: str(r[k]).replace(str(folder), "<out>") for k in r.keys() if k not in JOURNAL_TIMES}
                 for r in db.execute("SELECT * FROM cards ORDER BY batch, row")]
        return batches, cards
    finally:
        db.close()


def _audit(folder: Path) -> list[dict]:
    lines = [json.loads(x) for x in (folder / "audit.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))        # one chain, in the journal's order
    same = [{k: str(v).replace(str(folder), "<out>") for k, v in x.items() if k not in AUDIT_VARIES} for x in lines]
    return sorted(same, key=lambda x: (x["event"], int(x.get("row", 0))))


def _clean(folder: Path) -> list[str]:
    j = open_journal(str(folder / "journal.sqlite"), create=False)
    try:
        return verify(folder / "audit.jsonl", keys().audit_mac, j)[1]
    finally:
        j.close()


def test_two_workers_make_the_same_cards_journal_and_audit_as_one(tmp_path, monkeypatch):
    csv_path = str(tmp_path / "holders.csv")
    bad = dict(cardholders.generate(1, seed=21, start=99)[0], sex="7")
    cardholders.write_csv(csv_path, cardholders.generate(50, seed=21)[:20] + [bad] + cardholders.generate(50, seed=21)[20:])
    used = set()
    image = cardwork.Worker.image

    def spy(self, serial, path):
        used.add(self.process.pid)
        return image(self, serial, path)

    monkeypatch.setattr(cardwork.Worker, "image", spy)
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, workers in ((one, 1), (two, 2)):
        r = _run(folder, csv_path, workers)
        assert (r.done, r.rejected, r.quarantined, r.pending) == (50, 1, 0, 0)
    assert len(used) == 2, "both worker processes must have made cards"
    assert _images(one) == _images(two)                                       # byte for byte
    assert _journal(one) == _journal(two)
    assert _audit(one) == _audit(two)
    assert _clean(one) == _clean(two) == []


def _children(pid: int) -> set[int]:
    found = set()
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("point", ["claimed", "perso", "save", "saved", "audit-append"])
def test_a_station_killed_with_its_workers_resumes_to_one_card_per_cardholder(tmp_path, point):
    holders = cardholders.generate(24, seed=22)
    csv_path = str(tmp_path / "holders.csv")
    cardholders.write_csv(csv_path, holders)
    ref = tmp_path / "ref"
    _run(ref, csv_path, 1)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "cli", "perso", "run", "--cardholders", csv_path,
            "--keys", key_file(tmp_path / "keys.json", PASS), "--out-dir", str(out / "cards"), "--station", "s",
            "--journal", str(out / "journal.sqlite"), "--audit", str(out / "audit.jsonl"), "--workers", "2"]
    env = dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS)
    # The station SIGKILLs itself at its 9th `point`, with the other worker's card in hand.
    station = subprocess.Popen(args, cwd=ROOT, env=dict(env, SSCARD_TEST_CRASH=f"{point}:9"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = set()
    while station.poll() is None:
        workers |= _children(station.pid)
        time.sleep(0.01)
    assert station.returncode == -signal.SIGKILL, station.stderr.read()
    assert len(workers) >= 2 and 0 < done_cards(out / "journal.sqlite") < 24
    for _ in range(500):                                      # they die with the station, not at some later time
        if not any(_alive(w) for w in workers):
            break
        time.sleep(0.01)
    assert not any(_alive(w) for w in workers), "a card worker outlived its station"
    r = subprocess.run(args + ["--resume", "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["done"] == 24
    db = sqlite3.connect(out / "journal.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT card_number) FROM cards WHERE state = 'done'").fetchone() == (24, 24)
    done = [json.loads(x)["card_number"] for x in (out / "audit.jsonl").read_text().splitlines()
            if json.loads(x)["event"] == "card-done"]
    assert sorted(done) == sorted(h["card_number"] for h in holders)         # every card's line, once
    assert _images(out) == _images(ref)                                      # the cards one clean run makes
    assert _clean(out) == []


def test_a_worker_that_dies_stops_the_station_in_one_line_and_a_resume_finishes(tmp_path, monkeypatch):
    csv_path = str(tmp_path / "holders.csv")
    cardholders.write_csv(csv_path, cardholders.generate(12, seed=23))
    real, seen = cardwork.Worker.call, []

    def call(self, op, *args):
        if op == "perso":
            seen.append(op)
            if len(seen) == 5:                                  # killed in the middle of a card
                self.process.kill()
                self.process.join()
        return real(self, op, *args)

    monkeypatch.setattr(cardwork.Worker, "call", call)
    with pytest.raises(batch.BatchError, match=r"^card worker \d \(pid \d+\) stopped unexpectedly \(exit code -9\)$"):
        _run(tmp_path / "out", csv_path, 2)
    monkeypatch.undo()
    r = _run(tmp_path / "out", csv_path, 2, resume=True)
    assert (r.done, r.quarantined, r.pending) == (12, 0, 0)
    _run(tmp_path / "ref", csv_path, 1)
    assert _images(tmp_path / "out") == _images(tmp_path / "ref")
    assert _clean(tmp_path / "out") == []


def test_a_worker_ends_when_the_stations_end_of_its_pipe_closes(tmp_path):
    # What a worker sees when its station dies however it dies: no message, only the pipe's end.
    opts = batch.Options(prof(), keys(), "unused.csv", "unused", "unused", str(tmp_path))
    pool = cardwork.Pool(batch._work(opts), 2)
    try:
        for w in pool.workers:
            w.conn.close()
        for w in pool.workers:
            w.process.join(30)
        assert [w.process.exitcode for w in pool.workers] == [0, 0]
    finally:
        for w in pool.workers:
            if w.process.is_alive():
                w.process.kill()


def test_a_worker_whose_station_died_before_it_asked_to_die_with_it_ends_at_once():
    import multiprocessing
    from personalize.cardholders import die_with_parent
    ctx = multiprocessing.get_context("fork")
    for station, code in ((os.getpid(), 0), (1, 1)):        # its station, or one gone (it now belongs to init)
        p = ctx.Process(target=die_with_parent, args=(station,))
        p.start()
        p.join(30)
        assert p.exitcode == code
