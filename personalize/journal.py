"""The personalization journal: SQLite in WAL mode, one row per cardholder, its step written
before the step runs, so a batch killed at any point resumes knowing where each card stood.

No PIN, key, cryptogram or MAC is ever stored: rows hold card numbers, ATRs, steps and
status words.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, profile TEXT NOT NULL, profile_digest TEXT NOT NULL,
    source TEXT NOT NULL, source_digest TEXT NOT NULL, started REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS cards (
    batch TEXT NOT NULL, row INTEGER NOT NULL, card_number TEXT NOT NULL, ssn TEXT NOT NULL,
    state TEXT NOT NULL, step TEXT, target TEXT, atr TEXT, reason TEXT, updated REAL NOT NULL,
    PRIMARY KEY (batch, row)
);
CREATE UNIQUE INDEX IF NOT EXISTS card_number_once ON cards(card_number) WHERE state != 'rejected';
"""

PENDING, STARTED, DONE, QUARANTINED, REJECTED = "pending", "started", "done", "quarantined", "rejected"


@dataclass(frozen=True)
class CardRow:
    """One cardholder's place in a batch."""

    row: int
    card_number: str
    ssn: str
    state: str
    step: str | None
    target: str | None
    atr: str | None
    reason: str | None


class Journal:
    """A batch journal; safe to share between reader threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, sql: str, args=()) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def batch(self, batch_id: str) -> dict | None:
        with self._lock:
            cur = self._db.execute("SELECT id, profile, profile_digest, source, source_digest, started, finished "
                                   "FROM batches WHERE id = ?", (batch_id,))
            row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("id", "profile", "profile_digest", "source", "source_digest", "started", "finished"), row))

    def open_batch(self, batch_id: str, profile: str, profile_digest: str, source: str, source_digest: str,
                   rows: list[tuple[int, str, str, str, str]]) -> None:
        """Record a new batch and its rows (row, card number, ssn, state, reason) in one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, NULL)",
                                 (batch_id, profile, profile_digest, source, source_digest, now))
                self._db.executemany(
                    "INSERT INTO cards (batch, row, card_number, ssn, state, reason, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(batch_id, r, num, ssn, state, reason, now) for r, num, ssn, state, reason in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def issued_elsewhere(self, batch_id: str, card_numbers: list[str], ssns: list[str]) -> tuple[set[str], set[str]]:
        """Card numbers and social security numbers other batches already personalized or hold."""
        with self._lock:
            nums = {r[0] for r in self._db.execute(
                "SELECT card_number FROM cards WHERE batch != ? AND state != 'rejected'", (batch_id,))}
            ids = {r[0] for r in self._db.execute(
                "SELECT ssn FROM cards WHERE batch != ? AND state IN ('done', 'started')", (batch_id,))}
        return nums & set(card_numbers), ids & set(ssns)

    def cards(self, batch_id: str) -> list[CardRow]:
        with self._lock:
            rows = self._db.execute("SELECT row, card_number, ssn, state, step, target, atr, reason FROM cards "
                                    "WHERE batch = ? ORDER BY row", (batch_id,)).fetchall()
        return [CardRow(*r) for r in rows]

    def step(self, batch_id: str, row: int, step: str, target: str | None = None, atr: str | None = None) -> None:
        """Record that a card is about to go through `step` (before the step runs)."""
        self._tx("UPDATE cards SET state = 'started', step = ?, target = COALESCE(?, target), "
                 "atr = COALESCE(?, atr), updated = ? WHERE batch = ? AND row = ?",
                 (step, target, atr, time.time(), batch_id, row))

    def finish(self, batch_id: str, row: int, state: str, reason: str | None = None) -> None:
        self._tx("UPDATE cards SET state = ?, reason = ?, updated = ? WHERE batch = ? AND row = ?",
                 (state, reason, time.time(), batch_id, row))

    def reset(self, batch_id: str, row: int) -> None:
        """Put an interrupted card back to pending (a virtual card is simply made again)."""
        self._tx("UPDATE cards SET state = 'pending', step = NULL, target = NULL, atr = NULL, updated = ? "
                 "WHERE batch = ? AND row = ?", (time.time(), batch_id, row))

    def close_batch(self, batch_id: str) -> None:
        self._tx("UPDATE batches SET finished = ? WHERE id = ?", (time.time(), batch_id))

    def counts(self, batch_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM cards WHERE batch = ? GROUP BY state", (batch_id,))
            return dict(rows.fetchall())
