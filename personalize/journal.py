"""The personalization journal: SQLite in WAL mode, one row per cardholder, its step written
before the step runs, so a batch killed at any point resumes knowing where each card stood.

The journal also keeps what it takes to trust the audit log: the number and keyed hash of every
audit line a batch wrote (recorded before the line is appended, so a line lost to a crash is
written again on resume), and the schema itself refuses a card number or a social security
number on two cards that are not rejected. Plain SQL with declarative constraints.

No PIN, key, cryptogram or MAC is ever stored: rows hold card numbers, ATRs, steps and
status words.
"""

from __future__ import annotations

import fcntl
import os
import socket
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
CREATE UNIQUE INDEX IF NOT EXISTS card_number_once ON cards(card_number) WHERE state <> 'rejected';
CREATE UNIQUE INDEX IF NOT EXISTS ssn_once ON cards(ssn) WHERE state <> 'rejected';
CREATE TABLE IF NOT EXISTS audit_logs (
    log TEXT PRIMARY KEY, path TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_lines (
    log TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, batch TEXT NOT NULL,
    event TEXT NOT NULL, row INTEGER, PRIMARY KEY (log, seq)
);
CREATE TABLE IF NOT EXISTS audit_next (
    log TEXT PRIMARY KEY, seq INTEGER NOT NULL, line TEXT NOT NULL
);
"""

PENDING, STARTED, DONE, QUARANTINED, REJECTED = "pending", "started", "done", "quarantined", "rejected"


class JournalError(RuntimeError):
    """The journal refuses: a duplicate card, a journal another process owns, a damaged journal."""


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


@dataclass(frozen=True)
class AuditMark:
    """An audit line as the journal records it: its log, number and keyed hash, batch, event and card row."""

    log: str
    seq: int
    hash: str
    batch: str
    event: str
    row: int | None = None


class Journal:
    """A batch journal; safe to share between reader threads."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = path
        if not create and not os.path.exists(path):
            raise JournalError(f"{path}: no such journal")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.executescript(SCHEMA)
            except sqlite3.IntegrityError:
                raise JournalError(f"{path}: the journal already holds one card number or social security number "
                                   "on two cards (made before sscard refused it); resolve them first") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, *statements: tuple[str, tuple]) -> list[int]:
        """Run statements in one transaction; the number of rows each changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counts = [self._db.execute(sql, args).rowcount for sql, args in statements]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return counts

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def batch(self, batch_id: str) -> dict | None:
        rows = self._query("SELECT id, profile, profile_digest, source, source_digest, started, finished "
                           "FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            return None
        return dict(zip(("id", "profile", "profile_digest", "source", "source_digest", "started", "finished"), rows[0]))

    def open_batch(self, batch_id: str, profile: str, profile_digest: str, source: str, source_digest: str,
                   rows: list[tuple[int, str, str, str, str]]) -> None:
        """Record a new batch and its rows (row, card number, ssn, state, reason) in one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, NULL)",
                                 (batch_id, profile, profile_digest, source, source_digest, now))
                for r, num, ssn, state, reason in rows:
                    try:
                        self._db.execute("INSERT INTO cards (batch, row, card_number, ssn, state, reason, updated) "
                                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (batch_id, r, num, ssn, state, reason, now))
                    except sqlite3.IntegrityError:
                        raise JournalError(f"line {r}: card number {num} or its social security number is already "
                                           "on a card in the journal (another batch took it meanwhile)") from None
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def issued_elsewhere(self, batch_id: str, card_numbers: list[str], ssns: list[str]) -> tuple[set[str], set[str]]:
        """Card numbers and social security numbers other batches hold on cards that are not rejected."""
        held = self._query("SELECT card_number, ssn FROM cards WHERE batch <> ? AND state <> 'rejected'", (batch_id,))
        return {n for n, _ in held} & set(card_numbers), {s for _, s in held} & set(ssns)

    def cards(self, batch_id: str) -> list[CardRow]:
        rows = self._query("SELECT row, card_number, ssn, state, step, target, atr, reason FROM cards "
                           "WHERE batch = ? ORDER BY row", (batch_id,))
        return [CardRow(*r) for r in rows]

    def claim(self, batch_id: str, row: int) -> bool:
        """Take a pending cardholder for this worker before any APDU; False when another has it already."""
        return self._tx(("UPDATE cards SET state = 'started', step = 'claimed', updated = ? "
                         "WHERE batch = ? AND row = ? AND state = 'pending'", (time.time(), batch_id, row)))[0] == 1

    def step(self, batch_id: str, row: int, step: str, target: str | None = None, atr: str | None = None) -> None:
        """Record that a card is about to go through `step` (before the step runs)."""
        self._tx(("UPDATE cards SET state = 'started', step = ?, target = COALESCE(?, target), "
                  "atr = COALESCE(?, atr), updated = ? WHERE batch = ? AND row = ?",
                  (step, target, atr, time.time(), batch_id, row)))

    def finish(self, batch_id: str, row: int, state: str, reason: str | None = None,
               mark: AuditMark | None = None, line: str = "") -> None:
        """A card's end state, with the audit line about it recorded in the same transaction."""
        self._tx(("UPDATE cards SET state = ?, reason = ?, updated = ? WHERE batch = ? AND row = ?",
                  (state, reason, time.time(), batch_id, row)), *self._mark_statements(mark, line))

    def mark(self, mark: AuditMark, line: str) -> None:
        """Record an audit line (number, hash, event) before it is appended to its log."""
        self._tx(*self._mark_statements(mark, line))

    @staticmethod
    def _mark_statements(mark: AuditMark | None, line: str) -> list[tuple[str, tuple]]:
        if mark is None:
            return []
        return [("INSERT INTO audit_lines (log, seq, hash, batch, event, row) VALUES (?, ?, ?, ?, ?, ?)",
                 (mark.log, mark.seq, mark.hash, mark.batch, mark.event, mark.row)),
                ("INSERT INTO audit_next (log, seq, line) VALUES (?, ?, ?) "
                 "ON CONFLICT (log) DO UPDATE SET seq = excluded.seq, line = excluded.line",
                 (mark.log, mark.seq, line))]

    def register_log(self, log: str, path: str) -> None:
        self._tx(("INSERT INTO audit_logs (log, path, created) VALUES (?, ?, ?) ON CONFLICT (log) DO NOTHING",
                  (log, path, time.time())))

    def logs(self) -> dict[str, str]:
        """Every audit log the journal knows: log id → path it was written at."""
        return dict(self._query("SELECT log, path FROM audit_logs"))

    def marks(self, log: str) -> list[AuditMark]:
        rows = self._query("SELECT log, seq, hash, batch, event, row FROM audit_lines WHERE log = ? ORDER BY seq", (log,))
        return [AuditMark(*r) for r in rows]

    def next_line(self, log: str) -> tuple[int, str] | None:
        """The last audit line recorded for a log (number, text): the one a crash may have kept from it."""
        rows = self._query("SELECT seq, line FROM audit_next WHERE log = ?", (log,))
        return rows[0] if rows else None

    def reset(self, batch_id: str, row: int) -> None:
        """Put an interrupted card back to pending (a virtual card is simply made again)."""
        self._tx(("UPDATE cards SET state = 'pending', step = NULL, target = NULL, atr = NULL, updated = ? "
                  "WHERE batch = ? AND row = ?", (time.time(), batch_id, row)))

    def close_batch(self, batch_id: str) -> None:
        self._tx(("UPDATE batches SET finished = ? WHERE id = ?", (time.time(), batch_id)))

    def counts(self, batch_id: str) -> dict[str, int]:
        return dict(self._query("SELECT state, COUNT(*) FROM cards WHERE batch = ? GROUP BY state", (batch_id,)))

    def states(self) -> dict[tuple[str, int], tuple[str, str]]:
        """Every card of every batch: (batch, row) → (state, card number)."""
        return {(b, r): (s, n) for b, r, s, n in self._query("SELECT batch, row, state, card_number FROM cards")}


class Owner:
    """This process's hold on a journal: an exclusive flock on `<journal>.lock`, which the kernel
    drops when the process dies, so it never goes stale. The file names the holder for the message."""

    def __init__(self, journal_path: str, what: str) -> None:
        self.path = f"{journal_path}.lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JournalError(f"{journal_path} is in use by {holder}; wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S%z')}"
                     f" ({what})\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """The holder's line from the lock file; a holder that has just taken the lock writes it within moments."""
    for _ in range(40):
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "another process"
