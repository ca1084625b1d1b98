"""The personalization journal: one row per cardholder, its step written before the step runs, so a
batch killed at any point resumes knowing where each card stood. Two engines hold the same schema:
a SQLite file (one station; the default) or a PostgreSQL database (several stations on one batch).

A station takes a cardholder by claiming its row in one transaction (`FOR UPDATE SKIP LOCKED` on
PostgreSQL) with its station id and a lease it renews while it works; a row whose lease ran out is
claimed again by whoever comes next. Card numbers and social security numbers are unique in the
database itself, across batches.

The journal also keeps what it takes to trust the audit logs: the number and keyed hash of every
audit line each station wrote (recorded in the same transaction as the card's state, before the line
is appended, so a line lost to a crash is written again when that log is next opened).

No PIN, key, cryptogram or MAC is ever stored: rows hold card numbers, the cardholder's printed
data, ATRs, steps and status words.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA_VERSION = 2

# Version 1 had no version table: batches and cards without stations, leases or holder data.
TABLES = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, profile TEXT NOT NULL, profile_digest TEXT NOT NULL,
    source TEXT NOT NULL, source_digest TEXT NOT NULL, started DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS cards (
    batch TEXT NOT NULL, row INTEGER NOT NULL, card_number TEXT NOT NULL, ssn TEXT NOT NULL,
    state TEXT NOT NULL, step TEXT, target TEXT, atr TEXT, reason TEXT, updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (batch, row)
);
CREATE UNIQUE INDEX IF NOT EXISTS card_number_once ON cards(card_number) WHERE state != 'rejected'
"""
V2 = [
    "ALTER TABLE cards ADD COLUMN station TEXT",
    "ALTER TABLE cards ADD COLUMN lease_until DOUBLE PRECISION",
    "ALTER TABLE cards ADD COLUMN claimed DOUBLE PRECISION",
    "ALTER TABLE cards ADD COLUMN holder TEXT",
    "CREATE UNIQUE INDEX IF NOT EXISTS ssn_once ON cards(ssn) WHERE state != 'rejected'",
    "CREATE INDEX IF NOT EXISTS cards_todo ON cards(batch, state, row)",
    "CREATE TABLE IF NOT EXISTS audit_logs (log TEXT PRIMARY KEY, path TEXT NOT NULL, created DOUBLE PRECISION "
    "NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_lines (log TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, "
    "batch TEXT NOT NULL, event TEXT NOT NULL, row INTEGER, PRIMARY KEY (log, seq))",
    "CREATE TABLE IF NOT EXISTS audit_next (log TEXT PRIMARY KEY, seq INTEGER NOT NULL, line TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sscard_schema (version INTEGER NOT NULL)",
]

PENDING, STARTED, DONE, QUARANTINED, REJECTED = "pending", "started", "done", "quarantined", "rejected"
COLUMNS = "row, card_number, ssn, state, step, target, atr, reason, station, holder"


class JournalError(RuntimeError):
    """The journal cannot be opened or used as asked; the message says why."""


class Conflict(JournalError):
    """A write broke a uniqueness rule (a batch, card number or SSN the database already holds)."""


class LeaseLost(JournalError):
    """This station's claim on a card ran out and another station took the card."""


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
    station: str | None = None
    holder_json: str | None = None

    @property
    def holder(self) -> dict[str, str]:
        return json.loads(self.holder_json) if self.holder_json else {}


@dataclass(frozen=True)
class AuditMark:
    """An audit line as the journal records it: its log, number and keyed hash, batch, event and card row."""

    log: str
    seq: int
    hash: str
    batch: str
    event: str
    row: int | None = None


def is_database_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_journal(target: str, station: str = "", create: bool = True) -> "Journal":
    """The journal a `--journal` value names: a postgresql:// URL or a SQLite file (which must exist unless
    `create`)."""
    if is_database_url(target):
        return PostgresJournal(target, station)
    if not create and not os.path.exists(target):
        raise JournalError(f"{target}: no such journal")
    return SqliteJournal(target, station)


def redact(target: str) -> str:
    """The journal's name for messages: a URL without its password."""
    if not is_database_url(target) or "@" not in target:
        return target
    scheme, rest = target.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"


class Journal:
    """A batch journal shared by the threads of one station; every method is one transaction."""

    NOW = ""                    # the engine's clock as seconds since 1970, in SQL
    SKIP_LOCKED = ""

    def __init__(self, target: str, station: str) -> None:
        self.target, self.station = target, station
        self._lock = threading.Lock()
        self._connect()
        self._migrate()

    # ---- engine-specific parts ----
    def _connect(self) -> None:
        raise NotImplementedError

    @contextmanager
    def _tx(self):
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("{now}", self.NOW)

    def _patient(self, run):
        """Run a statement of an open transaction that may wait on another station's uncommitted rows."""
        return run()

    def own(self, batch_id: str, wait: float = 10.0) -> None:
        """Take the lock that makes this process the only one running `station` on the batch (released by
        the engine or the OS when the process dies); raise JournalError naming the holder."""
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- schema ----
    def _tables(self, q) -> set[str]:
        raise NotImplementedError

    def _migrate(self) -> None:
        try:
            self._create_or_upgrade()
        except Conflict:
            raise JournalError(f"{redact(self.target)}: the journal already holds one card number or social "
                               "security number on two cards (made before sscard refused it); resolve them "
                               "first") from None

    def _create_or_upgrade(self) -> None:
        with self._tx() as q:
            tables = self._tables(q)
            if "sscard_schema" in tables:
                version = q("SELECT MAX(version) FROM sscard_schema").fetchone()[0] or 0
            else:
                version = 1 if "cards" in tables else 0
            if version > SCHEMA_VERSION:
                raise JournalError(f"{redact(self.target)}: journal schema version {version} is newer than this "
                                   f"sscard understands ({SCHEMA_VERSION}); upgrade sscard to use it")
            if version == SCHEMA_VERSION:
                return
            for stmt in TABLES.split(";"):
                q(stmt)
            for stmt in V2:
                q(stmt)
            q("DELETE FROM sscard_schema")
            q("INSERT INTO sscard_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        with self._tx() as q:
            return q("SELECT MAX(version) FROM sscard_schema").fetchone()[0]

    # ---- batches ----
    def batch(self, batch_id: str) -> dict | None:
        with self._tx() as q:
            row = q("SELECT id, profile, profile_digest, source, source_digest, started, finished "
                    "FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("id", "profile", "profile_digest", "source", "source_digest", "started", "finished"), row))

    def batches(self) -> list[str]:
        with self._tx() as q:
            return [r[0] for r in q("SELECT id FROM batches ORDER BY started").fetchall()]

    def has_source(self, profile_digest: str, source: str) -> bool:
        """Whether a batch of this profile was recorded from a file of this name (perhaps this very file)."""
        with self._tx() as q:
            return q("SELECT 1 FROM batches WHERE profile_digest = ? AND source = ? LIMIT 1",
                     (profile_digest, source)).fetchone() is not None

    @contextmanager
    def new_batch(self, batch_id: str, profile: str, profile_digest: str, source: str, source_digest: str):
        """Record a new batch in one transaction, its rows added chunk by chunk through the object given;
        Conflict when another station recorded it first. Leaving by an exception records nothing."""
        with self._tx() as q:
            q("INSERT INTO batches (id, profile, profile_digest, source, source_digest, started, finished) "
              "VALUES (?, ?, ?, ?, ?, {now}, NULL)", (batch_id, profile, profile_digest, source, source_digest))
            yield _NewBatch(self, q, batch_id)

    def open_batch(self, batch_id: str, profile: str, profile_digest: str, source: str, source_digest: str,
                   rows) -> None:
        """Record a new batch and all its rows (row, card number, ssn, state, reason, holder) at once."""
        with self.new_batch(batch_id, profile, profile_digest, source, source_digest) as nb:
            nb.add(rows)

    def _many(self, q, sql: str, rows) -> None:
        for r in rows:
            q(sql, r)

    def issued_elsewhere(self, batch_id: str, card_numbers: list[str], ssns: list[str]) -> tuple[set[str], set[str]]:
        """Card numbers and social security numbers other batches already personalized or hold."""
        with self._tx() as q:
            nums = {r[0] for r in q("SELECT card_number FROM cards WHERE batch != ? AND state != 'rejected'",
                                    (batch_id,)).fetchall()}
            ids = {r[0] for r in q("SELECT ssn FROM cards WHERE batch != ? AND state != 'rejected'",
                                   (batch_id,)).fetchall()}
        return nums & set(card_numbers), ids & set(ssns)

    def cards(self, batch_id: str) -> list[CardRow]:
        with self._tx() as q:
            rows = q(f"SELECT {COLUMNS} FROM cards WHERE batch = ? ORDER BY row", (batch_id,)).fetchall()
        return [CardRow(*r) for r in rows]

    def close_batch(self, batch_id: str) -> None:
        with self._tx() as q:
            q("UPDATE batches SET finished = {now} WHERE id = ? AND finished IS NULL", (batch_id,))

    def counts(self, batch_id: str) -> dict[str, int]:
        with self._tx() as q:
            return dict(q("SELECT state, COUNT(*) FROM cards WHERE batch = ? GROUP BY state", (batch_id,)).fetchall())

    # ---- claims ----
    EXCLUSIVE = False           # True: own() keeps every other process out of the journal

    def release_own(self, batch_id: str) -> None:
        """After own(): cards this station held when it died (on an exclusive journal: any station) are free to
        claim at once."""
        with self._tx() as q:
            q("UPDATE cards SET lease_until = 0 WHERE batch = ? AND lease_until IS NOT NULL"
              + ("" if self.EXCLUSIVE else " AND station = ?"), (batch_id,) + (() if self.EXCLUSIVE else (self.station,)))

    def claim(self, batch_id: str, lease: float) -> CardRow | None:
        """Take the next cardholder, before any APDU: a pending one, or one whose station's lease ran out (a card
        half made). The row comes back as it was before the claim."""
        with self._tx() as q:
            row = q(f"SELECT {COLUMNS} FROM cards WHERE batch = ? AND (state = 'pending' OR "
                    f"(lease_until IS NOT NULL AND lease_until < {{now}})) ORDER BY row LIMIT 1{self.SKIP_LOCKED}",
                    (batch_id,)).fetchone()
            if row is None:
                return None
            c = CardRow(*row)
            fresh = c.state == PENDING
            q("UPDATE cards SET station = ?, lease_until = {now} + ?, updated = {now}"
              + (", state = 'started', step = 'claimed', claimed = {now}" if fresh else "")
              + " WHERE batch = ? AND row = ?", (self.station, lease, batch_id, c.row))
        return c

    def step(self, batch_id: str, row: int, step: str, lease: float, target: str | None = None,
             atr: str | None = None) -> None:
        """Record that a card is about to go through `step` (before the step runs); renews the lease."""
        self._held("UPDATE cards SET state = 'started', step = ?, target = COALESCE(?, target), "
                   "atr = COALESCE(?, atr), lease_until = {now} + ?, updated = {now} "
                   "WHERE batch = ? AND row = ? AND station = ? AND lease_until IS NOT NULL",
                   (step, target, atr, lease, batch_id, row, self.station), row)

    def finish(self, batch_id: str, row: int, state: str, reason: str | None = None,
               mark: AuditMark | None = None, line: str = "") -> None:
        """A card's end state and the record of its audit line, in one transaction: the card leaves the station."""
        self._held("UPDATE cards SET state = ?, reason = ?, lease_until = NULL, updated = {now} "
                   "WHERE batch = ? AND row = ? AND station = ? AND lease_until IS NOT NULL",
                   (state, reason, batch_id, row, self.station), row, mark, line)

    def _held(self, sql: str, args: tuple, row: int, mark: AuditMark | None = None, line: str = "") -> None:
        with self._tx() as q:
            if q(sql, args).rowcount != 1:
                raise LeaseLost(f"line {row}: station {self.station}'s claim ran out and another station took the card")
            self._record(q, mark, line)

    # ---- the audit logs' records ----
    @staticmethod
    def _record(q, mark: AuditMark | None, line: str) -> None:
        if mark is None:
            return
        q("INSERT INTO audit_lines (log, seq, hash, batch, event, row) VALUES (?, ?, ?, ?, ?, ?)",
          (mark.log, mark.seq, mark.hash, mark.batch, mark.event, mark.row))
        q("INSERT INTO audit_next (log, seq, line) VALUES (?, ?, ?) "
          "ON CONFLICT (log) DO UPDATE SET seq = excluded.seq, line = excluded.line", (mark.log, mark.seq, line))

    def mark(self, mark: AuditMark, line: str) -> None:
        """Record an audit line (number, hash, event) before it is appended to its log."""
        with self._tx() as q:
            self._record(q, mark, line)

    def register_log(self, log: str, path: str) -> None:
        with self._tx() as q:
            q("INSERT INTO audit_logs (log, path, created) VALUES (?, ?, {now}) ON CONFLICT (log) DO NOTHING",
              (log, path))

    def logs(self) -> dict[str, str]:
        """Every audit log the journal knows: log id → path it was written at."""
        with self._tx() as q:
            return dict(q("SELECT log, path FROM audit_logs").fetchall())

    def marks(self, log: str) -> list[AuditMark]:
        with self._tx() as q:
            rows = q("SELECT log, seq, hash, batch, event, row FROM audit_lines WHERE log = ? ORDER BY seq",
                     (log,)).fetchall()
        return [AuditMark(*r) for r in rows]

    def card_marks(self) -> set[tuple[str, int]]:
        """(batch, row) of every card line any station's log recorded."""
        with self._tx() as q:
            return {(b, r) for b, r in q("SELECT batch, row FROM audit_lines WHERE event IN "
                                         "('card-done', 'card-quarantined')").fetchall()}

    def next_line(self, log: str) -> tuple[int, str] | None:
        """The last audit line recorded for a log (number, text): the one a crash may have kept from it."""
        with self._tx() as q:
            row = q("SELECT seq, line FROM audit_next WHERE log = ?", (log,)).fetchone()
        return tuple(row) if row else None

    def states(self) -> dict[tuple[str, int], tuple[str, str]]:
        """Every card of every batch: (batch, row) → (state, card number)."""
        with self._tx() as q:
            return {(b, r): (s, n) for b, r, s, n in q("SELECT batch, row, state, card_number FROM cards").fetchall()}

    def renew(self, batch_id: str, lease: float) -> None:
        """Keep every card this station is working on claimed for another `lease` seconds."""
        with self._tx() as q:
            q("UPDATE cards SET lease_until = {now} + ? WHERE batch = ? AND station = ? AND lease_until IS NOT NULL "
              "AND lease_until > 0", (lease, batch_id, self.station))

    def held_by_others(self, batch_id: str) -> int:
        """Cards other stations are working on under a live lease (they may yet come back to the pool)."""
        with self._tx() as q:
            return q("SELECT COUNT(*) FROM cards WHERE batch = ? AND lease_until >= {now} AND station != ?",
                     (batch_id, self.station)).fetchone()[0]

    # ---- status ----
    def station_status(self, batch_id: str) -> tuple[float, list[tuple]]:
        """The engine's time now, and per station: cards done, in hand, quarantined, its first claim, its last
        finished card and its oldest claim still in hand."""
        with self._tx() as q:
            now = q("SELECT {now}").fetchone()[0]
            rows = q("SELECT station, SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END), "
                     "SUM(CASE WHEN state = 'started' THEN 1 ELSE 0 END), "
                     "SUM(CASE WHEN state = 'quarantined' THEN 1 ELSE 0 END), MIN(claimed), "
                     "MAX(CASE WHEN state IN ('done', 'quarantined') THEN updated END), "
                     "MIN(CASE WHEN state = 'started' THEN claimed END) "
                     "FROM cards WHERE batch = ? AND station IS NOT NULL GROUP BY station ORDER BY station",
                     (batch_id,)).fetchall()
        return now, rows


class _NewBatch:
    """A batch being recorded: rows go in chunk by chunk inside the batch's one transaction."""

    def __init__(self, journal: Journal, q, batch_id: str) -> None:
        self.journal, self.q, self.batch_id = journal, q, batch_id

    def name(self, batch_id: str, source_digest: str) -> bool:
        """Give the batch being recorded its id and its file's digest, known once the file is read; False, with
        nothing changed, when the journal holds that batch already (Conflict when another station is recording
        it at this moment)."""
        if self.q("SELECT 1 FROM batches WHERE id = ?", (batch_id,)).fetchone():
            return False
        self.journal._patient(lambda: self.q("UPDATE batches SET id = ?, source_digest = ? WHERE id = ?",
                                             (batch_id, source_digest, self.batch_id)))
        self.q("UPDATE cards SET batch = ? WHERE batch = ?", (batch_id, self.batch_id))
        self.batch_id = batch_id
        return True

    def holders_of(self, field: str, values: list[str]) -> dict[str, tuple[str, int]]:
        """Which of these card numbers or SSNs a card of any batch (this one included) already holds:
        value -> (batch, line). The database's own index answers, so memory stays flat."""
        assert field in ("card_number", "ssn")
        found: dict[str, tuple[str, int]] = {}
        for i in range(0, len(values), 500):
            part = values[i:i + 500]
            marks = ", ".join("?" * len(part))
            for value, batch, row in self.q(f"SELECT {field}, batch, row FROM cards WHERE state != 'rejected' "
                                            f"AND {field} IN ({marks})", tuple(part)).fetchall():
                found[value] = (batch, row)
        return found

    def add(self, rows, judged: bool = False) -> None:
        """Rows as (line, card number, ssn, state, reason[, holder fields]). A card number or SSN that a card
        already holds is refused naming the line (the unique indexes refuse it anyway); `judged` when the
        caller looked them up already."""
        rows = [tuple(r) + ({},) * (6 - len(r)) for r in rows]
        live = [] if judged else [r for r in rows if r[3] != REJECTED]
        nums, ids = self.holders_of("card_number", [r[1] for r in live]), self.holders_of("ssn", [r[2] for r in live])
        seen: set[str] = set()
        for r in live:
            if r[1] in nums or r[2] in ids or r[1] in seen or r[2] in seen:
                raise Conflict(f"line {r[0]}: card number {r[1]} or its social security number is already on a "
                               "card in the journal (another batch took it meanwhile)")
            seen |= {r[1], r[2]}
        values = [(self.batch_id, r, num, ssn, state, reason, json.dumps(holder, ensure_ascii=False))
                  for r, num, ssn, state, reason, holder in rows]
        self.journal._patient(lambda: self.journal._many(
            self.q, "INSERT INTO cards (batch, row, card_number, ssn, state, reason, holder, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, {now})", values))


class SqliteJournal(Journal):
    """The journal in a SQLite file in WAL mode: one station owns a batch at a time."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    EXCLUSIVE = True

    WAIT = 30.0                 # seconds a statement waits for another process's write

    def _connect(self) -> None:
        try:
            self._db = sqlite3.connect(self.target, check_same_thread=False, isolation_level=None, timeout=self.WAIT)
            self._wal()
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise JournalError(f"{self.target}: {e}") from None
        self._owner = None

    def _wal(self) -> None:
        # A new file's switch to WAL fails at once, without the busy wait, while another process (a station
        # started at the same moment) holds its write lock: SQLite will not risk a deadlock. Tried again.
        deadline = time.monotonic() + self.WAIT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(0.05)

    @contextmanager
    def _tx(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield lambda sql, args=(): self._db.execute(self._sql(sql), args)
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as e:
                self._db.execute("ROLLBACK")
                raise Conflict(str(e)) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _many(self, q, sql: str, rows) -> None:
        self._db.executemany(self._sql(sql), rows)

    def _tables(self, q) -> set[str]:
        return {r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}

    def own(self, batch_id: str, wait: float = 0.0) -> None:
        if self._owner is None:                     # the file's one lock, whichever batch it was taken for
            self._owner = Owner(self.target, f"batch {batch_id}, station {self.station}")

    def close(self) -> None:
        super().close()
        if self._owner:
            self._owner.release()


class Owner:
    """This process's hold on a SQLite journal: an exclusive flock on `<journal>.lock`, which the kernel
    drops when the process dies, so it never goes stale. The file names the holder for the message."""

    def __init__(self, journal_path: str, what: str) -> None:
        self.path = f"{journal_path}.lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JournalError(f"{journal_path} is in use by {holder}; wait for it to finish or stop it "
                               "(several stations need a PostgreSQL journal)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S%z')}"
                     f" ({what})\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# A station that freezes or drops off the network mid-transaction holds the rows it wrote, and every station
# recording a file that shares them waits on it: the server must end its session within a minute, not after the
# hours of TCP's default keepalive. Healthy stations never come near these: the longest a recording transaction
# sits idle is the check of one chunk of the file between two statements (well under a second on a slow PC), and
# every other transaction runs its statements back to back.
IDLE_IN_TRANSACTION = 30.0      # seconds the server lets a station's transaction sit idle before ending it
KEEPALIVE_IDLE = 10             # seconds of silence before the first TCP keepalive probe, both ends
KEEPALIVE_INTERVAL = 5          # seconds between probes
KEEPALIVE_COUNT = 3             # unanswered probes before the peer is taken for gone: 10 + 3 * 5 = 25 s
USER_TIMEOUT = 30.0             # seconds sent data may stay unacknowledged before the connection is dropped
# A statement that waits on another session's uncommitted rows looks at the holder this often: a station the
# server will end in time is waited for, a session idle in its transaction past that (one without these
# settings: an administrator's, an older sscard's) stops this station naming it.
LOCK_WAIT = 5.0


class PostgresJournal(Journal):
    """The journal in a PostgreSQL database: any number of stations claim cards of one batch."""

    NOW = "extract(epoch from clock_timestamp())::double precision"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def _connect(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise JournalError("a PostgreSQL journal needs psycopg: pip install 'sscard[postgres]'") from None
        self._pg = psycopg
        try:
            self._db = psycopg.connect(self.target, autocommit=True, connect_timeout=15,
                                       application_name=f"sscard station {self.station} pid {os.getpid()}"[:63],
                                       keepalives=1, keepalives_idle=KEEPALIVE_IDLE,
                                       keepalives_interval=KEEPALIVE_INTERVAL, keepalives_count=KEEPALIVE_COUNT,
                                       tcp_user_timeout=int(USER_TIMEOUT * 1000))
            # Set once the session is up, not as libpq startup `options`, which a connection pooler
            # (PgBouncer by default) refuses.
            names, values = zip(*_session_settings())
            self._db.execute("SELECT set_config(name, value, false) FROM unnest(%s::text[], %s::text[]) AS s(name, value)",
                             (list(names), list(values)))
        except psycopg.Error as e:
            raise JournalError(f"{redact(self.target)}: {str(e).strip().splitlines()[0]}") from None

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    @contextmanager
    def _tx(self):
        with self._lock:
            try:
                with self._db.transaction():
                    yield lambda sql, args=(): self._db.execute(self._sql(sql), args)
            except self._pg.errors.UniqueViolation as e:
                raise Conflict(str(e).splitlines()[0]) from None
            except self._pg.OperationalError as e:
                # The server went away or refused: one line, never the URL's password.
                raise JournalError(f"{redact(self.target)}: {str(e).strip().splitlines()[0]}") from None

    def _patient(self, run):
        # Each wait on another session's lock is bounded; rolled back to the savepoint, the statement is tried
        # again while its holder is working or is one the server ends when it falls idle.
        while True:
            try:
                with self._db.transaction():
                    self._db.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(LOCK_WAIT * 1000)}ms",))
                    done = run()
                    self._db.execute("SELECT set_config('lock_timeout', '0', true)")
                    return done
            except self._pg.errors.LockNotAvailable:
                self._stuck_holder()

    def _stuck_holder(self) -> None:
        """Raise JournalError naming a session that holds rows of the journal, idle in its transaction for longer
        than any station's may be."""
        holder = self._db.execute(
            "SELECT a.application_name, a.client_addr, extract(epoch from clock_timestamp() - a.state_change) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'relation' AND l.granted "
            "AND l.pid != pg_backend_pid() AND l.mode = 'RowExclusiveLock' AND l.relation IN "
            "('cards'::regclass, 'batches'::regclass) AND a.state = 'idle in transaction' "
            "ORDER BY a.state_change LIMIT 1").fetchone()
        if holder and holder[2] > IDLE_IN_TRANSACTION + LOCK_WAIT:
            raise JournalError(f"station {self.station} is waiting on rows {_who(holder)} holds in a transaction "
                               f"left idle for {holder[2]:.0f} s; end that session and start this station again")

    def _migrate(self) -> None:
        # Two stations starting on an empty database must not both create the tables.
        with self._tx() as q:
            q("SELECT pg_advisory_lock(hashtextextended('sscard schema', 0))")
        try:
            super()._migrate()
        finally:
            with self._tx() as q:
                q("SELECT pg_advisory_unlock(hashtextextended('sscard schema', 0))")

    def _many(self, q, sql: str, rows) -> None:
        with self._db.cursor() as cur:
            cur.executemany(self._sql(sql), list(rows))

    def _tables(self, q) -> set[str]:
        return {r[0] for r in q("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()}

    def own(self, batch_id: str, wait: float = 10.0) -> None:
        # A session lock: the server drops it when this process's connection goes, however it dies. A
        # killed station's server session may take a moment to notice, hence the short wait.
        key = f"sscard {batch_id} {self.station}"
        deadline = time.monotonic() + wait
        while True:
            with self._tx() as q:
                if q("SELECT pg_try_advisory_lock(hashtextextended(?, 0))", (key,)).fetchone()[0]:
                    return
                holder = q("SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a "
                           "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.pid != pg_backend_pid() "
                           "AND l.objid = (hashtextextended(?, 0) & 4294967295)::oid LIMIT 1", (key,)).fetchone()
            if time.monotonic() >= deadline:
                who = _who(holder) if holder else "another process"
                raise JournalError(f"station {self.station} is already running batch {batch_id}: {who}")
            time.sleep(0.2)


def _session_settings() -> tuple[tuple[str, str], ...]:
    """The server side of a station's session: a transaction left idle ended, a silent client probed."""
    return (("idle_in_transaction_session_timeout", str(int(IDLE_IN_TRANSACTION * 1000))),
            ("tcp_keepalives_idle", str(KEEPALIVE_IDLE)), ("tcp_keepalives_interval", str(KEEPALIVE_INTERVAL)),
            ("tcp_keepalives_count", str(KEEPALIVE_COUNT)), ("tcp_user_timeout", str(int(USER_TIMEOUT * 1000))))


def _who(holder: tuple) -> str:
    """A session as pg_stat_activity names it: application name and client address."""
    return f"{holder[0] or 'a session'} from {holder[1] or 'this host'}"


def _holder(fd: int) -> str:
    """The holder's line from the lock file; a holder that has just taken the lock writes it within moments."""
    for _ in range(40):
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "another process"
