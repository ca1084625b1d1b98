"""The batch runner: a cardholder file, a profile and issuer keys in; personalized cards out.

Cards go into card images in a folder, or through PC/SC readers (one worker per reader). The
journal records each card's step before it runs; --resume finishes a killed batch: virtual
cards that were half made are made again, real ones are quarantined with the step they were
in. A card whose authentication fails is never retried. Consecutive failures stop the batch.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cardos import image as card_image
from cardos import sw as SW
from terminal.factors import card_factor

from . import cardholders, crash, virtual
from .audit import AuditError, AuditLog
from .compile import init_script, perso_script
from .journal import DONE, PENDING, QUARANTINED, REJECTED, STARTED, Journal, JournalError, Owner
from .keys import KeyProvider
from .profile import Profile
from .script import ScriptError, run
from .verify import VerifyError, verify_card

AUTH_FAILURES = {SW.MAC_WRONG, SW.FMCOS_MAC_WRONG, SW.BLOCKED, SW.SECURITY_NOT_SATISFIED}


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
    workers: int | None = None
    card_timeout: float = 60.0
    encoding: str = "utf-8"
    rules: cardholders.Rules = field(default_factory=cardholders.Rules)


@dataclass
class Result:
    """How a batch ended."""

    batch: str
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
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def batch_id(profile: Profile, source_digest: str) -> str:
    return hashlib.sha256(f"{profile.digest}:{source_digest}".encode()).hexdigest()[:16]


Progress = Callable[[str, int], None]


def prepare(opts: Options, bid: str, src: str) -> tuple[list[tuple[int, dict]], dict[int, list[tuple[str, str]]], Journal]:
    """Read and check the cardholder file against itself and the journal; open or reopen the batch."""
    rows = cardholders.read_csv(opts.cardholder_file, opts.encoding)
    journal = Journal(opts.journal)
    try:
        existing = journal.batch(bid)
        if existing and not opts.resume:
            raise BatchError(f"batch {bid} is in the journal already; add --resume to finish it")
        if opts.resume and not existing:
            raise BatchError(f"nothing to resume: the journal has no batch {bid} for this profile and file")
        problems = cardholders.check_all(rows, opts.profile, opts.workers, rules=opts.rules) if not existing else {}
        if not existing:
            nums, ids = journal.issued_elsewhere(bid, [r.get("card_number", "") for _, r in rows],
                                                 [r.get("ssn", "") for _, r in rows])
            for line, row in rows:
                if row.get("card_number") in nums:
                    problems.setdefault(line, []).append(("card_number", "already issued in an earlier batch"))
                if row.get("ssn") in ids:
                    problems.setdefault(line, []).append(("ssn", "already has a card from an earlier batch"))
            if problems and opts.strict:
                raise BatchError(f"--strict: {len(problems)} of {len(rows)} records are invalid; nothing was personalized")
            journal.open_batch(bid, opts.profile.name, opts.profile.digest, os.path.basename(opts.cardholder_file), src, [
                (line, row.get("card_number", ""), row.get("ssn", ""),
                 REJECTED if line in problems else PENDING,
                 "; ".join(f"{f}: {why}" for f, why in problems[line]) if line in problems else None)
                for line, row in rows])
    except BaseException:
        journal.close()
        raise
    return rows, problems, journal


def run_batch(opts: Options, progress: Progress | None = None) -> Result:
    """Personalize every valid cardholder of the file not yet done; return the counts. One process
    owns the journal while it runs; a second one is refused with the first one's name."""
    if bool(opts.out_dir) == bool(opts.readers):
        raise BatchError("give either an output folder for card images or PC/SC readers")
    src = _digest(opts.cardholder_file)
    bid = batch_id(opts.profile, src)
    try:
        owner = Owner(opts.journal, f"batch {bid}")
    except JournalError as e:
        raise BatchError(str(e)) from None
    try:
        return _run_owned(opts, bid, src, progress)
    except (JournalError, AuditError) as e:
        raise BatchError(str(e)) from None
    finally:
        owner.release()


def _run_owned(opts: Options, bid: str, src: str, progress: Progress | None) -> Result:
    t0 = time.monotonic()
    rows, problems, journal = prepare(opts, bid, src)
    by_line = dict(rows)
    result = Result(bid)
    audit = None
    try:
        audit = AuditLog(opts.audit, opts.keys.audit_mac, journal)
        if audit.recovered:
            audit.write("recovered", batch=bid, lines=audit.recovered,
                        result="the journal recorded these lines before a crash kept them from the log")
        if problems:
            result.rejects_file = str(Path(opts.journal).with_name(f"rejects-{bid}.csv"))
            cardholders.write_rejects(result.rejects_file, problems)
        _settle_interrupted(opts, bid, journal, audit)
        versions = {n: opts.keys.version(n) for n in virtual.master_names(opts.profile)}
        audit.write("batch-start", batch=bid, profile=opts.profile.name, profile_digest=opts.profile.digest,
                    key_versions=versions, source_digest=src,
                    resumed=opts.resume, target=opts.out_dir or ", ".join(opts.readers))
        todo = [c for c in journal.cards(bid) if c.state == PENDING]
        worker = _ImageWorker(opts, bid, journal, audit, by_line) if opts.out_dir else None
        failures = _Failures(opts.max_failures)
        if worker:
            for c in todo:
                if failures.stopped:
                    break
                ok = worker.make(c)
                if ok is None:
                    continue                         # another worker has this cardholder
                failures.count(ok, c.card_number)
                result.made_now += ok
                if progress:
                    progress(c.card_number, 1)
        else:
            result.made_now = _run_readers(opts, bid, journal, audit, by_line, todo, failures, progress)
        counts = journal.counts(bid)
        result.done, result.rejected = counts.get(DONE, 0), counts.get(REJECTED, 0)
        result.quarantined, result.pending = counts.get(QUARANTINED, 0), counts.get(PENDING, 0) + counts.get(STARTED, 0)
        result.quarantine = [{"line": c.row, "card_number": c.card_number, "reason": c.reason}
                             for c in journal.cards(bid) if c.state == QUARANTINED]
        result.stopped = failures.stopped
        if not result.pending:
            journal.close_batch(bid)
        audit.write("batch-end", batch=bid, done=result.done, rejected=result.rejected,
                    quarantined=result.quarantined, pending=result.pending, stopped=result.stopped)
    finally:
        if audit is not None:
            audit.close()
        journal.close()
    result.seconds = time.monotonic() - t0
    return result


def _settle_interrupted(opts: Options, bid: str, journal: Journal, audit: AuditLog) -> None:
    """Cards a killed run left started: claimed only (no APDU yet) or virtual ones go back to
    pending; a real card that had commands is quarantined with the step it was in."""
    for c in journal.cards(bid):
        if c.state != STARTED:
            continue
        if opts.out_dir or c.step == "claimed":
            journal.reset(bid, c.row)
            continue
        reason = f"interrupted during {c.step}; inspect the card in {c.target}"
        audit.write("card-quarantined", batch=bid, row=c.row, card_number=c.card_number, atr=c.atr,
                    result=f"interrupted during {c.step}",
                    record=lambda m, line, row=c.row: journal.finish(bid, row, QUARANTINED, reason, m, line))


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


def _failure(e: Exception) -> str:
    """A quarantine reason without secrets; authentication failures say they are not retried."""
    if isinstance(e, ScriptError):
        auth = e.sw in AUTH_FAILURES or (e.sw & 0xFFF0) == SW.PIN_WRONG
        return f"step {e.note!r} answered {e.sw:04X}" + (" (authentication failure: not retried)" if auth else "")
    return str(e)


def _produce(t, c, holder: dict, opts: Options, bid: str, journal: Journal, audit: AuditLog, target: str,
             init: bool, save=None, where: dict | None = None, done: dict | None = None) -> bool | None:
    """One card through [initialization →] personalization → read-back [→ save], each step journaled
    before it runs; a failure quarantines the card with its reason. True when the card is done;
    None when the cardholder was not this worker's to take (claimed before any APDU)."""
    from reader_bridge.transport import TransportError

    if not journal.claim(bid, c.row):
        return None
    crash.point("claimed")
    prof, keys, where = opts.profile, opts.keys, where or {}
    atr = t.atr()
    hexatr = atr.hex().upper()
    trail: list[str] = []
    try:
        if init:
            journal.step(bid, c.row, "init", target, hexatr)
            trail += _sws(run(t.transmit, init_script(prof), keys))
            t.reset()
        factor = card_factor(atr)
        values = cardholders.values(holder, prof, factor, opts.rules)
        crash.point("perso")
        journal.step(bid, c.row, "perso", target, hexatr)
        trail += _sws(run(t.transmit, perso_script(prof, values, factor), keys))
        t.reset()
        journal.step(bid, c.row, "verify")
        checked = verify_card(t, prof, values, keys)
        if save is not None:
            journal.step(bid, c.row, "save")
            save()
            crash.point("saved")
    except (ScriptError, VerifyError, cardholders.HolderError, TransportError) as e:
        reason = _failure(e)
        audit.write("card-quarantined", batch=bid, row=c.row, card_number=c.card_number, atr=hexatr, result=reason,
                    sw_trail=trail[-8:], **where,
                    record=lambda m, line: journal.finish(bid, c.row, QUARANTINED, reason, m, line))
        return False
    # The journal's "done" and the audit line's record are one transaction; the line follows.
    audit.write("card-done", batch=bid, row=c.row, card_number=c.card_number, atr=hexatr, result="personalized",
                verified_records=checked, sw_trail=_compress(trail), **where, **(done or {}),
                record=lambda m, line: journal.finish(bid, c.row, DONE, None, m, line))
    return True


class _ImageWorker:
    """Makes virtual cards into card images in a folder."""

    def __init__(self, opts: Options, bid: str, journal: Journal, audit: AuditLog, rows: dict[int, dict]) -> None:
        self.opts, self.bid, self.journal, self.audit, self.rows = opts, bid, journal, audit, rows
        Path(opts.out_dir).mkdir(parents=True, exist_ok=True)
        # A run killed while saving leaves its temporary behind; the image itself is whole.
        card_image.remove_stale_temps(opts.out_dir)

    def make(self, c) -> bool | None:
        path = str(Path(self.opts.out_dir) / f"{c.card_number}.json")
        card = virtual.blank(self.opts.profile, virtual.chip_serial(f"{self.bid}:{c.row}"))
        return _produce(_transport(card), c, self.rows[c.row], self.opts, self.bid, self.journal, self.audit,
                        path, init=True, save=lambda: card_image.save(card, path),
                        done={"image": os.path.basename(path)})


def _transport(card):
    from reader_bridge.transport import InProcess
    return InProcess(card)


def _sws(log) -> list[str]:
    return [f"{ex.sw:04X}" for ex in log]


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


def _run_readers(opts: Options, bid, journal: Journal, audit: AuditLog, rows, todo, failures: _Failures,
                 progress: Progress | None) -> int:
    """One worker thread per reader, taking cardholders from a shared queue."""
    work: queue.Queue = queue.Queue()
    for c in todo:
        work.put(c)
    made = [0]
    seen_atrs = {c.atr for c in journal.cards(bid) if c.atr}
    lock = threading.Lock()
    errors: list[str] = []

    in_flight = [0]

    def take():
        """The next cardholder; None once the queue is empty and no other worker may hand one back."""
        while True:
            with lock:
                try:
                    c = work.get_nowait()
                    in_flight[0] += 1
                    return c
                except queue.Empty:
                    if in_flight[0] == 0:
                        return None
            time.sleep(0.05)

    def worker(reader: str) -> None:
        from reader_bridge.pcsc import PcscTransport, list_readers
        from reader_bridge.transport import TransportError
        last_atr = None
        while not failures.stopped:
            c = take()
            if c is None:
                return
            try:
                atr = _wait_for_new_card(reader, last_atr, seen_atrs, lock, opts.card_timeout, list_readers)
                t = PcscTransport(reader, timeout=opts.card_timeout)
            except TransportError as e:
                # This reader has no card to give: another worker may still take the cardholder.
                with lock:
                    work.put(c)
                    in_flight[0] -= 1
                errors.append(f"{reader}: {e}")
                return
            ok = False
            try:
                ok = _produce(t, c, rows[c.row], opts, bid, journal, audit, reader, init=opts.init,
                              where={"reader": reader})
            finally:
                last_atr = atr
                try:
                    t.close(unpower=True)
                except TransportError:
                    pass
                with lock:
                    in_flight[0] -= 1
                    made[0] += bool(ok)
            if ok is None:
                continue                             # another worker has this cardholder
            failures.count(ok, c.card_number)
            if progress:
                progress(c.card_number, 1)

    threads = [threading.Thread(target=worker, args=(r,), name=f"perso:{r}") for r in opts.readers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors and not failures.stopped and not work.empty():
        failures.stopped = "; ".join(errors)
    return made[0]


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
