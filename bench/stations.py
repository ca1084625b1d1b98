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

from common import ROOT, machine

PASS = "bench stations passphrase"


def _keyfile(where: Path) -> str:
    from personalize.keys import KeyRef, save_key_file
    from tests.ss import keys
    p = keys()
    path = where / "keys.json"
    save_key_file(path, {n: (p.algorithm(KeyRef(n)), p.value_for_plain_load(KeyRef(n)), 1) for n in p.names()}, PASS)
    return str(path)


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


def stations(cards: int) -> None:
    from personalize import cardholders
    from tests.pg_cluster import Cluster
    with tempfile.TemporaryDirectory() as tmp, Cluster(durable=True) as pg:
        tmp = Path(tmp)
        keyfile = _keyfile(tmp)
        csv_path = str(tmp / "holders.csv")
        cardholders.write_csv(csv_path, cardholders.generate(cards, seed=21))
        runs = [("SQLite, 1 station", 1, None), ("PostgreSQL, 1 station", 1, "pg1"),
                ("PostgreSQL, 2 stations", 2, "pg2"), ("PostgreSQL, 4 stations", 4, "pg4")]
        print(f"# stations: {cards} virtual cards into images ({machine()})")
        for label, n, db in runs:
            out = tmp / (db or "sqlite")
            out.mkdir()
            journal = pg.create_database(db) if db else str(out / "journal.sqlite")
            seconds = _stations(n, journal, csv_path, keyfile, out)
            print(f"{label:26s} {cards / seconds:7.1f} cards/s ({seconds:.1f} s)")


def prep(records: int) -> None:
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
        out = subprocess.run([sys.executable, "-c", code, tmp, csv_path], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-1500:])
        n, seconds, base, peak, workers = out.stdout.split()
    seconds = float(seconds)
    print(f"# data preparation ({machine()})")
    print(f"{int(n):,} records read, hashed, checked on {os.cpu_count()} cores and journaled: {seconds:.1f} s "
          f"({int(n) / seconds:,.0f} records/s; target < 60 s: {'met' if seconds < 60 else 'NOT met'})")
    print(f"peak resident memory: {int(peak) / 1024:.0f} MiB in the main process (of which {int(base) / 1024:.0f} MiB "
          f"before preparing), {int(workers) / 1024:.0f} MiB in the largest check worker")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cards", type=int, default=200)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--skip-prep", action="store_true")
    ap.add_argument("--skip-stations", action="store_true")
    a = ap.parse_args()
    if not a.skip_stations:
        stations(a.cards)
        print()
    if not a.skip_prep:
        prep(a.records)


if __name__ == "__main__":
    main()
