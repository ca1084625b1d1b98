"""Several stations on one batch: cards per second into images with 1, 2 and 4 station processes on a
PostgreSQL journal against one station on SQLite, in one run; and data preparation of 1,000,000
generated records (streamed through the checks on all cores into the journal) with its peak memory.

Targets: 1,000,000 records prepared in < 60 s on 2 cores, memory flat (not growing with the file).
Arguments: --cards N (default 200), --records N (default 1,000,000), --skip-prep, --skip-stations.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT
from results import Results

PASS = "bench stations passphrase"


def _stations(n: int, journal: str, csv_path: str, keyfile: str, out: Path) -> float:
    """Wall time for n station processes to finish one batch."""
    t0 = time.perf_counter()
    ps = [subprocess.Popen([sys.executable, "-m", "cli", "perso", "run", "--cardholders", csv_path, "--keys", keyfile,
                            "--out-dir", str(out / "cards"), "--journal", journal, "--station", f"s{i}",
                            "--audit", str(out / f"audit-s{i}.jsonl"), "--json"],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, SSCARD_KEYS_PASSPHRASE=PASS)) for i in range(n)]
    for p in ps:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a station failed: {err[-500:]}")
    return time.perf_counter() - t0


def stations(cards: int, out: Results) -> None:
    from personalize import cardholders
    from tests.pg_cluster import Cluster
    from tests.ss import key_file
    with tempfile.TemporaryDirectory() as tmp, Cluster(durable=True) as pg:
        tmp = Path(tmp)
        keyfile = key_file(tmp / "keys.json", PASS)
        csv_path = str(tmp / "holders.csv")
        cardholders.write_csv(csv_path, cardholders.generate(cards, seed=21))
        runs = [("sqlite_1", "SQLite, 1 station", 1, None), ("pg_1", "PostgreSQL, 1 station", 1, "pg1"),
                ("pg_2", "PostgreSQL, 2 stations", 2, "pg2"), ("pg_4", "PostgreSQL, 4 stations", 4, "pg4")]
        for key, label, n, db in runs:
            folder = tmp / (db or "sqlite")
            folder.mkdir()
            journal = pg.create_database(db) if db else str(folder / "journal.sqlite")
            seconds = _stations(n, journal, csv_path, keyfile, folder)
            out.add(key, f"{cards} cards into images: {label}", cards / seconds, "cards/s")


def prep(records: int, out: Results) -> None:
    """Data preparation alone, in a child process so its peak memory is its own."""
    gen = f"""
import csv, sys
sys.path.insert(0, {str(ROOT)!r})
from personalize import cardholders
with open(sys.argv[1], "w", encoding="utf-8", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(cardholders.REQUIRED + cardholders.OPTIONAL), extrasaction="ignore")
    w.writeheader()
    for start in range(0, {records}, 50_000):
        w.writerows(cardholders.generate(min(50_000, {records} - start), seed=start + 1, start=start))
"""
    code = f"""
import os, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from personalize import batch
from personalize.journal import open_journal
from tests.ss import keys, prof
tmp, csv_path = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
opts = batch.Options(prof(), keys(), csv_path, os.path.join(tmp, "j.sqlite"), os.path.join(tmp, "a.jsonl"), tmp)
journal = open_journal(opts.journal, "bench")
t0 = time.perf_counter()
n, _, _, _ = batch.prepare(opts, journal)
seconds = time.perf_counter() - t0
journal.close()
print(n, seconds, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "records.csv")
        subprocess.run([sys.executable, "-c", gen, csv_path], check=True)
        run = subprocess.run([sys.executable, "-c", code, tmp, csv_path], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(run.stderr[-1500:])
        n, seconds, base, peak, workers = run.stdout.split()
    seconds = float(seconds)
    out.add("prep_s", f"data preparation, {int(n):,} records (read once, hashed, checked on {os.cpu_count()} "
                      "cores, journaled)", seconds, "s", higher_is_better=False, target="< 60 s", met=seconds < 60)
    out.add("prep_records_per_s", "  records per second", int(n) / seconds, "records/s")
    out.add("prep_peak_mib", "  peak resident memory, main process", int(peak) / 1024, "MiB", higher_is_better=False)
    out.add("prep_base_mib", "  of which before preparing", int(base) / 1024, "MiB", higher_is_better=False)
    out.add("prep_worker_mib", "  largest check worker", int(workers) / 1024, "MiB", higher_is_better=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cards", type=int, default=200)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--skip-prep", action="store_true")
    ap.add_argument("--skip-stations", action="store_true")
    a = ap.parse_args()
    out = Results("stations", "several stations on one batch; data preparation")
    if not a.skip_stations:
        stations(a.cards, out)
    if not a.skip_prep:
        prep(a.records, out)
    out.save()


if __name__ == "__main__":
    main()
