"""The audit log: one JSON line per card and per batch event, each chained to the one before by
HMAC-SHA256 under a key only the key provider holds, so a line edited, inserted, removed or
forged breaks the chain where it happened, and nobody without the key can re-chain the rest.

The journal records every line's number and keyed hash before the line is appended, so a cut
log (last lines gone, file emptied) is found against it, and a line a crash kept from the log
is appended on resume from the journal's copy, followed by a line saying it was recovered.

Each station writes its own log; every line names its station, batch and sequence number.
Lines carry who, when, batch, profile digest, key versions, card number, ATR, result and the
status-word trail; never a PIN, a key, a cryptogram or a MAC.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import crash
from .journal import DONE, QUARANTINED, AuditMark, Journal

GENESIS = "0" * 64
FORBIDDEN_FIELDS = {"pin", "key", "keys", "mac", "cryptogram", "passphrase", "value"}
Mac = Callable[[bytes], bytes]
Record = Callable[[AuditMark, str], None]


class AuditError(RuntimeError):
    """The audit log cannot be written: another process has it, or it disagrees with the journal."""


def _digest(mac: Mac, prev: str, body: dict) -> str:
    canon = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return mac((prev + canon).encode()).hex()


class AuditLog:
    """An append-only JSON-lines log, chained by HMAC, each line recorded in the journal first."""

    def __init__(self, path: str | os.PathLike, mac: Mac, journal: Journal, station: str | None = None) -> None:
        self.path, self._mac, self._journal, self.station = Path(path), mac, journal, station
        self._lock = threading.Lock()
        self._seq, self._last, self.log = 0, GENESIS, secrets.token_hex(8)
        self.recovered_torn_line = False
        self.recovered: list[int] = []
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise AuditError(f"{self.path} is being written by another process") from None
        try:
            self._resume()
            self._catch_up()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _resume(self) -> None:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A crash mid-append left a partial line; it has no valid hash, so it is cut.
            raw = raw[: raw.rfind(b"\n") + 1]
            os.ftruncate(self._fd, len(raw))
            os.fsync(self._fd)
            self.recovered_torn_line = True
        lines = raw.decode().splitlines()
        if lines:
            last = json.loads(lines[-1])
            if "log" not in last:
                raise AuditError(f"{self.path} was written by an older sscard (unkeyed chain): start a new audit log")
            self._seq, self._last, self.log = last["seq"], last["hash"], last["log"]
            return
        known = [log for log, where in self._journal.logs().items() if where == str(self.path.resolve())
                 and self._journal.marks(log)]
        if len(known) == 1 and self._journal.next_line(known[0])[0] == 1:
            self.log = known[0]                      # killed before its first line reached the file
        elif known:
            raise AuditError(f"{self.path} is empty, but the journal recorded lines of it: "
                             "the log was emptied (see sscard audit verify); write to a new audit log")

    def _catch_up(self) -> None:
        """Append the line the journal recorded but a crash kept from the log, if any."""
        self._journal.register_log(self.log, str(self.path.resolve()))
        pending = self._journal.next_line(self.log)
        if pending is None or pending[0] <= self._seq:
            return
        seq, line = pending
        if seq > self._seq + 1 or json.loads(line)["prev"] != self._last:
            raise AuditError(f"{self.path} ends at line {self._seq}, but the journal recorded line {seq}: "
                             "the log was cut (see sscard audit verify)")
        self._append(line)
        self._seq, self._last = seq, json.loads(line)["hash"]
        self.recovered.append(seq)

    def write(self, event: str, batch: str, row: int | None = None, record: Record | None = None,
              **fields) -> AuditMark:
        """Append one event; `record` stores it in the journal (default: as a bare mark) before the append."""
        bad = FORBIDDEN_FIELDS & {k.lower() for k in fields}
        if bad:
            raise ValueError(f"audit lines never carry {', '.join(sorted(bad))}")
        with self._lock:
            body = {"seq": self._seq + 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "who": _who(),
                    "log": self.log, "event": event, "batch": batch,
                    **({"station": self.station} if self.station else {}), **fields, "prev": self._last}
            if row is not None:
                body["row"] = row
            body["hash"] = _digest(self._mac, self._last, body)
            line = json.dumps(body, ensure_ascii=False, sort_keys=True) + "\n"
            mark = AuditMark(self.log, body["seq"], body["hash"], batch, event, row)
            (record or self._journal.mark)(mark, line)
            crash.point("audit-append")
            self._append(line)
            self._seq, self._last = body["seq"], body["hash"]
        return mark

    def _append(self, line: str) -> None:
        os.write(self._fd, line.encode())
        os.fsync(self._fd)


_WHO: list[str] = []


def _who() -> str:
    if not _WHO:
        try:
            _WHO.append(f"{getpass.getuser()}@{os.uname().nodename}")
        except (KeyError, OSError):
            _WHO.append(f"uid {os.getuid()}")
    return _WHO[0]


def verify(path: str | os.PathLike, mac: Mac, journal: Journal, limit: int = 50) -> tuple[int, list[str]]:
    """Check the keyed chain and the log against the journal; the number of lines and the problems
    found, each naming its line (from 1)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return 0, [f"{path}: {getattr(e, 'strerror', None) or e}"]
    lines = text.splitlines()
    problems: list[str] = []
    if text and not text.endswith("\n"):
        problems.append(f"line {len(lines)}: incomplete (the log was cut mid-line)")
    bodies = _chain(lines, mac, problems)
    log = next((b["log"] for b in bodies if b and "log" in b), None) or _log_by_path(path, journal, problems)
    if log is not None:
        _against_journal(bodies, journal.marks(log), problems)
        _cards_without_lines(bodies, journal, problems)
    _open_runs(bodies, problems)
    if len(problems) > limit:
        problems = problems[:limit] + [f"… and {len(problems) - limit} more problems"]
    return len(lines), problems


def _chain(lines: list[str], mac: Mac, problems: list[str]) -> list[dict | None]:
    """Each line parsed; breaks of the keyed chain reported where they are."""
    bodies: list[dict | None] = []
    prev = GENESIS
    for n, line in enumerate(lines, 1):
        try:
            body = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"line {n}: not JSON")
            bodies.append(None)
            prev = None
            continue
        claimed = body.pop("hash", None)
        if body.get("seq") != n:
            problems.append(f"line {n}: numbered {body.get('seq')} where {n} was due (a line was removed, "
                            "inserted or moved)")
        if prev is not None and body.get("prev") != prev:
            problems.append(f"line {n}: does not follow line {n - 1} (a line was removed, inserted or swapped)")
        if _digest(mac, str(body.get("prev")), body) != claimed:
            problems.append(f"line {n}: its keyed hash does not match: edited, or forged without the audit key")
        body["hash"] = claimed
        bodies.append(body)
        prev = claimed
    return bodies


def _log_by_path(path, journal: Journal, problems: list[str]) -> str | None:
    """Which of the journal's logs an empty or unreadable file was: by its path, or the only one."""
    logs = journal.logs()
    here = [log for log, where in logs.items() if where == str(Path(path).resolve())]
    if len(here) == 1 or len(logs) == 1:
        return (here or list(logs))[0]
    if logs:
        problems.append("line 1: no line names its log, and the journal knows several logs: cannot tell which this was")
    return None


def _against_journal(bodies: list[dict | None], marks: list[AuditMark], problems: list[str]) -> None:
    """Every line the journal recorded is there with its hash (else truncation or rewriting); every
    line of the log was recorded (else it was added)."""
    n = len(bodies)
    recorded = {m.seq: m for m in marks}
    if marks and marks[-1].seq > n:
        where = "the log is empty" if n == 0 else f"the log ends at line {n}"
        problems.append(f"line {n + 1}: missing: {where}, but the journal recorded lines up to {marks[-1].seq} "
                        f"(the log was cut)")
    for m in marks:
        if m.seq <= n and bodies[m.seq - 1] is not None and bodies[m.seq - 1].get("hash") != m.hash:
            problems.append(f"line {m.seq}: not the line the journal recorded there ({m.event} of batch {m.batch})")
    for i, body in enumerate(bodies, 1):
        if i not in recorded:
            problems.append(f"line {i}: the journal has no record of this line (added to the log)")


def _cards_without_lines(bodies: list[dict | None], journal: Journal, problems: list[str]) -> None:
    """A card the journal calls done or quarantined, in a batch of this log, has its audit line somewhere."""
    batches = {b.get("batch") for b in bodies if b}
    lined = journal.card_marks()          # lines of every station's log count
    for (batch, row), (state, number) in sorted(journal.states().items()):
        if batch in batches and state in (DONE, QUARANTINED) and (batch, row) not in lined:
            problems.append(f"line {len(bodies) + 1}: card {number} (batch {batch}, file line {row}) is {state} "
                            "in the journal but has no audit line")


def _open_runs(bodies: list[dict | None], problems: list[str]) -> None:
    """Every batch run ends with batch-end, unless a later run of the batch resumed it after a kill."""
    open_at: dict[str, int] = {}
    for n, b in enumerate(bodies, 1):
        if not b:
            continue
        if b.get("event") == "batch-start":
            open_at[b.get("batch")] = n
        elif b.get("event") == "batch-end":
            open_at.pop(b.get("batch"), None)
    for batch, n in sorted(open_at.items(), key=lambda kv: kv[1]):
        problems.append(f"line {n}: batch {batch} started here and has no batch-end (still running, killed and "
                        "not resumed, or its end was cut)")


def unchecked_logs(paths, journal: Journal) -> list[str]:
    """The logs the journal knows in the batches the given logs cover that were not among them: a station's
    log left out of the check would hide its lines."""
    given = {str(Path(p).resolve()) for p in paths}
    batches: set[str] = set()
    for log, where in journal.logs().items():
        if where in given:
            batches |= {m.batch for m in journal.marks(log)}
    return [f"{where}: the journal holds lines of this log (batch {', '.join(sorted(b))}) but it was not given"
            for log, where in sorted(journal.logs().items())
            if where not in given and (b := {m.batch for m in journal.marks(log)} & batches)]


def verify_logs(paths, mac, journal) -> tuple[list[str], int]:
    """Every station's audit log checked, and the logs against the journal: the problems, and the lines read."""
    problems, total = [], 0
    for path in paths:
        n, found = verify(path, mac, journal)
        total += n
        problems += [f"{path}: {p}" if len(paths) > 1 else p for p in found]
    return problems + unchecked_logs(paths, journal), total
