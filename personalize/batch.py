"""The batch runner (one station): a cardholder file, a profile and issuer keys in; personalized cards out.

Cards go into card images in a folder, or through PC/SC readers: one pool of workers, one per reader
(or per card worker process making images, one per core by default: see personalize.cardwork), each
claiming its next cardholder from the journal and taking it through one CardJob; the journal, the
audit log and the claims stay in this process. Several stations may share a batch on a PostgreSQL
journal. A card left half made by a station that died is claimed again once its lease runs out (at
once by the same station restarted): a virtual card is made again, a real one is quarantined with the
step it was in. A card whose authentication fails is never retried. Consecutive failures stop the
station.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cardos import image as card_image

from . import cardholders, cardwork, crash, virtual
from .audit import AuditError, AuditLog
from .compiler import init_script
from .journal import (DONE, PENDING, QUARANTINED, REJECTED, STARTED, CardRow, Conflict, Journal, JournalError,
                      LeaseLost, is_database_url, open_journal)
from .keys import KeyProvider
from .profile import Profile


class BatchError(RuntimeError):
    """The batch cannot start or had to stop; the message says why."""


@dataclass
class Options:
    """What a batch run needs."""

    profile: Profile
    keys: KeyProvider
    cardholder_file: str
    journal: str
    audit: str
    out_dir: str | None = None
    readers: tuple[str, ...] = ()
    resume: bool = False
    strict: bool = False
    init: bool = False
    max_failures: int = 3
    # Processes for the CPU work: checking the cardholder file and making virtual cards (None: one per core).
    workers: int | None = None
    card_timeout: float = 60.0
    station: str = ""
    lease: float = 30.0
    encoding: str = "utf-8"
    rules: cardholders.Rules = field(default_factory=cardholders.Rules)


def default_station() -> str:
    """A station is a PC: its host name, unless told otherwise."""
    return socket.gethostname() or "station"


def one_target(out_dir: str | None, readers) -> None:
    """A batch goes to card images in a folder or through PC/SC readers, never both."""
    if bool(out_dir) == bool(readers):
        raise BatchError("give --out-dir DIR (card images) or --reader NAME (PC/SC), not both")


def station_files(out_dir: str | None, journal: str | None, audit: str | None, station: str | None
                  ) -> tuple[str, str, str]:
    """This station's journal, audit log and id: the journal in the output folder (or here) by default,
    the audit log beside a SQLite journal or, with a shared database, one per station."""
    from .journal import is_database_url
    base = Path(out_dir) if out_dir else Path(".")
    if out_dir:
        base.mkdir(parents=True, exist_ok=True)
    journal = journal or str(base / "perso-journal.sqlite")
    station = station or default_station()
    if not audit:
        audit = (str(base / f"perso-audit-{station}.jsonl") if is_database_url(journal)
                 else str(Path(journal).with_name("perso-audit.jsonl")))
    return journal, audit, station


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else f"{seconds // 60} min {seconds % 60:02d} s"


def status_lines(r: dict) -> list[str]:
    """A batch's status as a person reads it: the batch, then one line per station."""
    left = "finished" if r["finished"] else (
        f"about {_duration(r['seconds_left'])} left" if r["seconds_left"] is not None else "time left unknown")
    rate = f"{r['rate']:.1f} cards/s" if r["rate"] else "no rate yet"
    out = [f"batch {r['batch']} ({r['profile']}, {r['source']}): {r['done']} done, {r['in_progress']} in "
           f"progress, {r['pending']} pending, {r['rejected']} rejected, {r['quarantined']} quarantined; "
           f"{rate}, {left}"]
    for s in r["stations"]:
        age = f" (oldest claim {s['oldest_claim_age']:.0f} s)" if s["oldest_claim_age"] is not None else ""
        srate = f"{s['rate']:.1f} cards/s" if s["rate"] else "-"
        out.append(f"  {s['station']}: {s['done']} done, {s['in_progress']} in progress{age}, "
                   f"{s['quarantined']} quarantined, {srate}")
    return out


def summary_lines(result: "Result") -> list[str]:
    """A finished run as a person reads it: the counts, the reject file, each card quarantined."""
    out = [f"batch {result.batch}: {result.done} done, {result.rejected} rejected, "
           f"{result.quarantined} quarantined, {result.pending} pending "
           f"({result.made_now} made now in {result.seconds:.1f} s)"]
    if result.rejects_file:
        out.append(f"rejects: {result.rejects_file}")
    return out + [f"quarantined line {q['line']} {q['card_number']}: {q['reason']}" for q in result.quarantine]


@dataclass
class Result:
    """How a batch ended (for this station)."""

    batch: str
    station: str = ""
    done: int = 0
    rejected: int = 0
    quarantined: int = 0
    pending: int = 0
    made_now: int = 0
    seconds: float = 0.0
    rejects_file: str | None = None
    stopped: str | None = None
    quarantine: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise cardholders.CsvError(f"{path}: {e.strerror}") from None
    return h.hexdigest()


def batch_id(profile: Profile, source_digest: str) -> str:
    return hashlib.sha256(f"{profile.digest}:{source_digest}".encode()).hexdigest()[:16]


Progress = Callable[[str, int], None]


def rejects_path(opts: Options, bid: str) -> str:
    where = Path(opts.journal) if not is_database_url(opts.journal) else Path(opts.audit)
    return str(where.with_name(f"rejects-{bid}.csv"))


class Recorded(Exception):
    """The file read for a new batch is one the journal holds already: (batch id, source digest)."""


def prepare(opts: Options, journal: Journal, src: str | None = None, bid: str | None = None
            ) -> tuple[int, str | None, str, str]:
    """Record a new batch: the file read once, hashed as it streams through the checks on all cores and into the
    journal chunk by chunk, duplicates found by the journal's own indexes. Without `bid` the rows go in under a
    provisional id that becomes the batch's id (from the profile and the file's digest) in the same transaction,
    or Recorded, nothing written, when the journal holds that batch already. Returns (records, rejects file or
    None, batch id, source digest); Conflict when another station committed one of its cardholders first."""
    import csv
    import secrets
    import tempfile
    digest = None if bid else hashlib.sha256()
    label = bid or f"new-{secrets.token_hex(6)}"
    where = Path(rejects_path(opts, label)).parent
    # Its own temporary: stations starting together each prepare until one of them records the batch.
    fd, tmp = tempfile.mkstemp(prefix=".rejects-", suffix=".csv.tmp", dir=where)
    records = invalid = 0
    with open(fd, "w", encoding="utf-8", newline="") as out:
        w = csv.writer(out)
        w.writerow(["line", "field", "reason"])
        try:
            with journal.new_batch(label, opts.profile.name, opts.profile.digest,
                                   os.path.basename(opts.cardholder_file), src or "") as nb:
                for chunk in cardholders.check_file(opts.cardholder_file, opts.profile, opts.encoding, opts.workers,
                                                    rules=opts.rules, digest=digest):
                    records += len(chunk)
                    rows = _judge(nb, label, chunk)
                    for line, _, _, state, _, _ in rows:
                        if state == REJECTED:
                            invalid += 1
                            for f, why in next(p for ln, _, p in chunk if ln == line):
                                w.writerow([line, f, why])
                    nb.add(rows, judged=True)         # --strict too: a refused batch is rolled back whole
                if digest is not None:
                    src = digest.hexdigest()
                    bid = batch_id(opts.profile, src)
                    if not nb.name(bid, src):
                        raise Recorded(bid, src)
                if opts.strict and invalid:
                    raise BatchError(f"--strict: {invalid} of {records} records are invalid; nothing was personalized")
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            out.close()
            os.unlink(tmp)
            raise
    if not invalid:
        os.unlink(tmp)
        return records, None, bid, src
    final = rejects_path(opts, bid)
    os.replace(tmp, final)
    return records, final, bid, src


def _judge(nb, bid: str, chunk) -> list[tuple]:
    """Journal rows for one checked chunk: the record's own problems plus the card numbers and SSNs that a line
    before it, or another batch, already holds (the problems lists grow in place for the reject file)."""
    held = {f: nb.holders_of(f, [row.get(f) or "" for _, row, _ in chunk]) for f in ("ssn", "card_number")}
    first: dict[tuple[str, str], int] = {}
    rows = []
    for line, row, problems in chunk:
        for f in ("ssn", "card_number"):
            value = row.get(f) or ""
            if not value or row.get(cardholders.RECORD):
                continue
            if value in held[f]:
                other_batch, other_line = held[f][value]
                problems.append((f, f"duplicate of line {other_line}") if other_batch == bid else
                                (f, "already issued in an earlier batch" if f == "card_number"
                                 else "already has a card from an earlier batch"))
            elif (f, value) in first:
                problems.append((f, f"duplicate of line {first[f, value]}"))
            elif not problems:
                first[f, value] = line
        state = REJECTED if problems else PENDING
        reason = "; ".join(f"{f}: {why}" for f, why in problems) or None
        rows.append((line, row.get("card_number") or "", row.get("ssn") or "", state, reason,
                     {} if problems else row))
    return rows


def run_batch(opts: Options, progress: Progress | None = None) -> Result:
    """This station's share of a batch: every valid cardholder of the file not yet done; return the counts."""
    one_target(opts.out_dir, opts.readers)
    t0 = time.monotonic()
    station = opts.station or default_station()
    audit = None
    # Forked before the journal, the audit log and the lock are opened: no worker holds a copy of them.
    pool = _pool(opts)
    try:
        journal = open_journal(opts.journal, station)
    except JournalError as e:
        pool.close()
        raise BatchError(str(e)) from None
    try:
        bid, src, existing, rejects = _open_batch(opts, journal)
        result = Result(bid, station, rejects_file=rejects)
        journal.release_own(bid)
        audit = AuditLog(opts.audit, opts.keys.audit_mac, journal, station=station)
        if audit.recovered:
            audit.write("recovered", batch=bid, lines=audit.recovered,
                        result="the journal recorded these lines before a crash kept them from the log")
        versions = {n: opts.keys.version(n) for n in virtual.master_names(opts.profile)}
        audit.write("batch-start", batch=bid, profile=opts.profile.name, profile_digest=opts.profile.digest,
                    key_versions=versions, source_digest=src, resumed=bool(existing),
                    target=opts.out_dir or ", ".join(opts.readers))
        station_run = Station(opts, bid, journal, audit, progress, pool)
        result.made_now = station_run.run()
        counts = journal.counts(bid)
        result.done, result.rejected = counts.get(DONE, 0), counts.get(REJECTED, 0)
        result.quarantined, result.pending = counts.get(QUARANTINED, 0), counts.get(PENDING, 0) + counts.get(STARTED, 0)
        result.quarantine = [{"line": c.row, "card_number": c.card_number, "reason": c.reason}
                             for c in journal.cards(bid) if c.state == QUARANTINED]
        result.stopped = station_run.failures.stopped
        if not result.pending:
            journal.close_batch(bid)
        audit.write("batch-end", batch=bid, done=result.done, rejected=result.rejected,
                    quarantined=result.quarantined, pending=result.pending, stopped=result.stopped)
    except (JournalError, AuditError, cardwork.WorkerError) as e:
        raise BatchError(str(e)) from None
    finally:
        pool.close()
        if audit is not None:
            audit.close()
        journal.close()
    result.seconds = time.monotonic() - t0
    return result


# A station reads its file again only when another committed cardholders of it meanwhile: a few times at most.
RECORD_TRIES = 5


def _open_batch(opts: Options, journal: Journal) -> tuple[str, str, dict | None, str | None]:
    """The batch the cardholder file makes, this process its only runner at this station: (id, source digest,
    its journal record when it was there already, reject file). A file the journal has not seen under this name
    is read once, recorded as it is hashed; otherwise it is hashed first to find its batch."""
    name = os.path.basename(opts.cardholder_file)
    bid = None
    if not opts.resume and not journal.has_source(opts.profile.digest, name):
        if journal.EXCLUSIVE:
            journal.own("being recorded")           # the file's lock, before anything is written
        try:
            _, rejects, bid, src = prepare(opts, journal)
            journal.own(bid)
            return bid, src, None, rejects
        except Recorded as e:
            bid, src = e.args
        except Conflict:
            if journal.EXCLUSIVE:                   # nobody else writes a SQLite journal: not a race
                raise
    if bid is None:
        bid = batch_id(opts.profile, src := _digest(opts.cardholder_file))
    journal.own(bid)
    for _ in range(RECORD_TRIES):
        existing = journal.batch(bid)
        shared = is_database_url(opts.journal) and existing and not existing["finished"]
        if existing and not opts.resume and not shared:
            raise BatchError(f"batch {bid} is in the journal already; add --resume to finish it")
        if opts.resume and not existing and not is_database_url(opts.journal):
            raise BatchError(f"nothing to resume: the journal has no batch {bid} for this profile and file")
        if existing:
            return bid, src, existing, None
        try:
            _, rejects, _, _ = prepare(opts, journal, src, bid)     # a changed file under a known name: read again
            return bid, src, None, rejects
        except Conflict:
            if journal.EXCLUSIVE:
                raise
            # Another station committed cardholders of this file while we read it: this very batch (we join it)
            # or another file's (read again, those lines are now duplicates of an earlier batch).
            continue
    raise BatchError(f"batch {bid}: other stations kept recording cardholders of this file while it was read "
                     f"({RECORD_TRIES} times); start this station again")


def _work(opts: Options) -> cardwork.Work:
    # Compiled once per batch: every card of it gets the same initialization.
    return cardwork.Work(opts.profile, opts.keys, opts.rules,
                         init_script(opts.profile) if (opts.out_dir or opts.init) else None)


def _pool(opts: Options) -> cardwork.Pool:
    """Card worker processes for a batch into images (none when one worker is asked for, or for readers)."""
    n = opts.workers or cardwork.default_workers()
    if not opts.out_dir or n < 2 or not cardwork.can_fork(opts.keys):
        return cardwork.Pool(None, 0)
    return cardwork.Pool(_work(opts), n)


def status(journal: Journal, batch_id: str) -> dict:
    """Where a batch stands, per station and overall: done, in progress (with the oldest claim's age), rejected,
    quarantined, cards per second and the estimated seconds left at that rate."""
    meta = journal.batch(batch_id)
    if meta is None:
        raise BatchError(f"the journal has no batch {batch_id}")
    counts = journal.counts(batch_id)
    now, rows = journal.station_status(batch_id)
    stations = []
    for name, done, held, quarantined, first, last, oldest in rows:
        span = (last - first) if first is not None and last is not None else 0
        stations.append({"station": name, "done": int(done), "in_progress": int(held), "quarantined": int(quarantined),
                         "oldest_claim_age": None if oldest is None else round(now - oldest, 1),
                         "rate": round(done / span, 2) if span > 0 else None})
    firsts = [r[4] for r in rows if r[4] is not None]
    lasts = [r[5] for r in rows if r[5] is not None]
    done = counts.get(DONE, 0)
    span = max(lasts) - min(firsts) if firsts and lasts else 0
    rate = done / span if span > 0 else None
    left = counts.get(PENDING, 0) + counts.get(STARTED, 0)
    return {"batch": batch_id, "profile": meta["profile"], "source": meta["source"],
            "finished": meta["finished"] is not None, "done": done, "in_progress": counts.get(STARTED, 0),
            "pending": counts.get(PENDING, 0), "rejected": counts.get(REJECTED, 0),
            "quarantined": counts.get(QUARANTINED, 0), "rate": round(rate, 2) if rate else None,
            "seconds_left": round(left / rate) if rate and left else (0 if not left else None),
            "stations": stations}


class _Failures:
    """Counts consecutive failures; enough of them stop the batch."""

    def __init__(self, limit: int) -> None:
        self.limit, self.run, self.stopped = limit, 0, None
        self._lock = threading.Lock()

    def count(self, ok: bool, card_number: str) -> None:
        with self._lock:
            self.run = 0 if ok else self.run + 1
            if self.run >= self.limit and not self.stopped:
                self.stopped = f"{self.run} cards failed in a row (last {card_number}): batch stopped"


class Station:
    """One station's pool of workers on a batch: each claims a cardholder, takes it through a CardJob, and
    comes back for the next until the batch has nothing left that another station might still give back."""

    def __init__(self, opts: Options, bid: str, journal: Journal, audit: AuditLog, progress: Progress | None,
                 pool: cardwork.Pool | None = None) -> None:
        self.opts, self.bid, self.journal, self.audit, self.progress = opts, bid, journal, audit, progress
        self.failures = _Failures(opts.max_failures)
        self.pool = pool
        self.work = pool.work if pool and pool.workers else _work(opts)
        self.made = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._crash: list[BaseException] = []
        self.seen_atrs = {c.atr for c in journal.cards(bid) if c.atr} if opts.readers else set()

    def run(self) -> int:
        if self.opts.out_dir:
            Path(self.opts.out_dir).mkdir(parents=True, exist_ok=True)
            if self.pool and self.pool.workers:
                slots = [_ImageSlot(self, w) for w in self.pool.workers]
            else:                           # keys in a token: threads in this process, one per core
                slots = [_ImageSlot(self) for _ in range(self.opts.workers or cardwork.default_workers())]
        else:
            slots = [_ReaderSlot(self, r) for r in self.opts.readers]
        renewer = threading.Thread(target=self._renew, name="perso:lease", daemon=True)
        renewer.start()
        try:
            if len(slots) == 1:
                self._work(slots[0])            # in this thread: a crash or Ctrl-C reaches the caller as it is
            else:
                threads = [threading.Thread(target=self._guarded, args=(slot,), name=f"perso:{slot.name}")
                           for slot in slots]
                for th in threads:
                    th.start()
                try:
                    for th in threads:
                        th.join()
                finally:
                    self._stop.set()            # Ctrl-C here: each worker ends the card in its hands, then stops
                    for th in threads:
                        th.join()
                if self._crash:
                    raise self._crash[0]
        finally:
            self._stop.set()
            renewer.join()
        if self.errors and not self.failures.stopped and self.journal.counts(self.bid).get(PENDING):
            self.failures.stopped = "; ".join(self.errors)
        return self.made

    def _renew(self) -> None:
        while not self._stop.wait(self.opts.lease / 3):
            try:
                self.journal.renew(self.bid, self.opts.lease)
            except JournalError:
                pass                                # the next step's own renewal reports a lost journal

    def _guarded(self, slot) -> None:
        try:
            self._work(slot)
        except BaseException as e:          # noqa: B036 - handed to the main thread, which raises it
            self._crash.append(e)

    def _work(self, slot) -> None:
        from reader_bridge.transport import TransportError
        ready = _NOTHING
        while not self.failures.stopped and not self._crash and not self._stop.is_set():
            try:
                # A card waiting in the reader stays there for the next claim if this one brings nothing.
                ready = slot.ready() if ready is _NOTHING else ready
            except TransportError as e:
                self.errors.append(f"{slot.name}: {e}")
                return
            c = self.journal.claim(self.bid, self.opts.lease)
            if c is None:
                if not self.journal.held_by_others(self.bid):
                    return
                time.sleep(min(1.0, self.opts.lease / 4))     # a dead station's cards come back when its lease ends
                continue
            crash.point("claimed")
            try:
                ok = self._take(c, slot, ready)
            except LeaseLost:
                ready = _NOTHING                        # another station has the cardholder; this card was used
                continue
            if ok is None:
                continue                                # no card was used
            ready = _NOTHING
            with self._lock:
                self.made += ok
            self.failures.count(ok, c.card_number)
            if self.progress:
                self.progress(c.card_number, 1)

    def _take(self, c: CardRow, slot, ready) -> bool | None:
        """One claimed cardholder: True made, False quarantined, None when another station left it half made at a
        reader (quarantined without touching this worker's card)."""
        if c.state == STARTED and c.step != "claimed" and not slot.remakes:
            reason = f"interrupted during {c.step} at station {c.station}; inspect the card in {c.target}"
            self._end(c, QUARANTINED, reason, atr=c.atr, result=f"interrupted during {c.step}")
            return None
        return CardJob(self, c, slot, ready).run()

    def _end(self, c: CardRow, state: str, reason: str | None, **fields) -> None:
        """The card's end state and its audit line's record in one journal transaction; the line follows."""
        event = "card-done" if state == DONE else "card-quarantined"
        self.audit.write(event, batch=self.bid, row=c.row, card_number=c.card_number,
                         **{k: v for k, v in fields.items() if v is not None},
                         record=lambda m, line: self.journal.finish(self.bid, c.row, state, reason, m, line))


_NOTHING = object()


class CardJob:
    """A card through [initialization →] personalization → read-back [→ save], each step journaled before it
    runs (renewing the claim); a failure quarantines the card with its reason."""

    def __init__(self, station: Station, c: CardRow, slot, ready) -> None:
        self.st, self.c, self.slot, self.ready = station, c, slot, ready

    def step(self, name: str, **where) -> None:
        self.st.journal.step(self.st.bid, self.c.row, name, self.st.opts.lease, **where)
        crash.point(name)

    def run(self) -> bool:
        st, c = self.st, self.c
        card, target, extra = self.slot.open(c, self.ready)
        trail: list[str] = []
        hexatr = "?"
        try:
            hexatr = card.atr()
            if st.work.init is not None:
                self.step("init", target=target, atr=hexatr)
                trail += card.init()
            self.step("perso", target=target, atr=hexatr)
            trail += card.perso(c.holder)
            self.step("verify")
            checked = card.verify()
            if card.saves:
                self.step("save")
                card.save()
                crash.point("saved")
        except cardwork.failures() as e:
            reason = cardwork.failure(e)
            st._end(c, QUARANTINED, reason, atr=hexatr, result=reason, sw_trail=trail[-8:], **self.slot.where)
            return False
        finally:
            self.slot.done(card)
        st._end(c, DONE, None, atr=hexatr, result="personalized", verified_records=checked,
                sw_trail=_compress(trail), **self.slot.where, **extra)
        return True


class _ImageSlot:
    """A worker that makes virtual cards into card images in a folder: in a card worker process, or here."""

    remakes = True                  # a half-made virtual card is simply made again
    where: dict = {}

    def __init__(self, station: Station, worker: cardwork.Worker | None = None) -> None:
        self.station, self.worker = station, worker
        self.name = worker.name if worker else "images"

    def ready(self):
        return None

    def open(self, c: CardRow, _):
        opts = self.station.opts
        path = str(Path(opts.out_dir) / f"{c.card_number}.json")
        if c.state == STARTED:
            # A station killed while saving this card left its temporary behind; the image itself is whole.
            card_image.remove_stale_temps(opts.out_dir, f"{c.card_number}.json")
        serial = virtual.chip_serial(f"{self.station.bid}:{c.row}")
        card = (self.worker.image(serial, path) if self.worker
                else cardwork.ImagePhases(self.station.work, serial, path))
        return card, path, {"image": os.path.basename(path)}

    def done(self, card) -> None:
        pass


class _ReaderSlot:
    """A worker at one PC/SC reader: it waits for a new card, then claims a cardholder for it."""

    remakes = False                 # a half-made real card is quarantined, never overwritten blindly

    def __init__(self, station: Station, reader: str) -> None:
        self.station, self.reader, self.name = station, reader, reader
        self.where = {"reader": reader}
        self.last_atr = None

    def ready(self) -> bytes:
        from reader_bridge.pcsc import list_readers
        st = self.station
        return _wait_for_new_card(self.reader, self.last_atr, st.seen_atrs, st._lock, st.opts.card_timeout,
                                  list_readers)

    def open(self, c: CardRow, atr: bytes):
        from reader_bridge.pcsc import PcscTransport
        self.last_atr = atr
        t = PcscTransport(self.reader, timeout=self.station.opts.card_timeout)
        return cardwork.Phases(t, self.station.work), self.reader, {}

    def done(self, card) -> None:
        from reader_bridge.transport import TransportError
        try:
            card.t.close(unpower=True)
        except TransportError:
            pass


def _compress(trail: list[str]) -> str:
    """The status-word trail, runs folded: 9000×41 6A81 …."""
    out, prev, n = [], None, 0
    for s in trail + [None]:
        if s == prev:
            n += 1
            continue
        if prev is not None:
            out.append(prev if n == 1 else f"{prev}×{n}")
        prev, n = s, 1
    return " ".join(out)


def _wait_for_new_card(reader: str, last_atr, seen: set, lock, timeout: float, list_readers) -> bytes:
    """Wait for a card this batch has not personalized yet (a new ATR) in the reader."""
    from reader_bridge.transport import TransportError
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in list_readers():
            if r.name.startswith(reader) and r.present and r.atr != last_atr:
                hexatr = r.atr.hex().upper()
                with lock:
                    if hexatr not in seen:
                        seen.add(hexatr)
                        return r.atr
        time.sleep(0.1)
    raise TransportError(f"no new card within {timeout:g} s")
