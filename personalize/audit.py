"""The audit log: one JSON line per card and per batch event, each chained to the one before by
SHA-256, so an edited, inserted or removed line breaks the chain where it happened.

Lines carry who, when, batch, profile digest, key versions, card number, ATR, result and the
status-word trail; never a PIN, a key, a cryptogram or a MAC.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import threading
import time
from pathlib import Path

GENESIS = "0" * 64
FORBIDDEN_FIELDS = {"pin", "key", "keys", "mac", "cryptogram", "passphrase", "value"}


def _digest(prev: str, body: dict) -> str:
    canon = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + canon).encode()).hexdigest()


class AuditLog:
    """An append-only, hash-chained JSON-lines log."""

    def __init__(self, path: str | os.PathLike, station: str | None = None) -> None:
        self.path = Path(path)
        self.station = station
        self._lock = threading.Lock()
        self._seq, self._last = 0, GENESIS
        self.recovered_torn_line = False
        if self.path.exists():
            self._resume()

    def _resume(self) -> None:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A crash mid-append left a partial line; it has no valid hash, so it is cut.
            keep = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(keep))
                f.flush()
                os.fsync(f.fileno())
            raw = keep
            self.recovered_torn_line = True
        lines = raw.decode().splitlines()
        if lines:
            last = json.loads(lines[-1])
            self._seq, self._last = last["seq"], last["hash"]

    def write(self, event: str, **fields) -> None:
        bad = FORBIDDEN_FIELDS & {k.lower() for k in fields}
        if bad:
            raise ValueError(f"audit lines never carry {', '.join(sorted(bad))}")
        with self._lock:
            body = {"seq": self._seq + 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "who": _who(), "event": event, **({"station": self.station} if self.station else {}),
                    **fields, "prev": self._last}
            body["hash"] = _digest(self._last, body)
            line = json.dumps(body, ensure_ascii=False, sort_keys=True) + "\n"
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._seq, self._last = body["seq"], body["hash"]


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{os.uname().nodename}"
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def verify(path: str | os.PathLike) -> tuple[int, list[str]]:
    """Check the chain; return the number of lines and the problems found (line numbers from 1)."""
    problems: list[str] = []
    prev, seq = GENESIS, 0
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        return 0, [f"{path}: {e.strerror}"]
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        problems.append(f"line {len(lines)}: incomplete (the log was cut mid-line)")
    for n, line in enumerate(lines, 1):
        try:
            body = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"line {n}: not JSON")
            continue
        claimed = body.pop("hash", None)
        if body.get("prev") != prev:
            problems.append(f"line {n}: does not follow line {n - 1} (a line was removed, inserted or reordered)")
        elif _digest(prev, body) != claimed:
            problems.append(f"line {n}: its contents do not match its hash (edited)")
        if body.get("seq") != seq + 1:
            problems.append(f"line {n}: sequence {body.get('seq')} where {seq + 1} was due")
        prev, seq = claimed or "", body.get("seq", seq + 1)
    return len(lines), problems


CARD_EVENTS = ("card-done", "card-quarantined")


def against_journal(logs: list[str | os.PathLike], journal, batch_id: str | None = None) -> list[str]:
    """Every station's log checked against the journal: each card the journal has done or quarantined has its
    line in the log of a station, and each card line names a card the journal holds in that state."""
    from .journal import DONE, QUARANTINED
    problems: list[str] = []
    lines: dict[tuple[str, str], list[str]] = {}
    for path in logs:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
            continue
        for n, line in enumerate(text.splitlines(), 1):
            try:
                body = json.loads(line)
            except json.JSONDecodeError:
                continue                        # the chain check reports it
            if body.get("event") in CARD_EVENTS and (batch_id is None or body.get("batch") == batch_id):
                lines.setdefault((body["batch"], body["card_number"]), []).append(
                    f"{path}:{n}:{body['event']}:{body.get('station') or ''}")
    wanted = {DONE: "card-done", QUARANTINED: "card-quarantined"}
    for bid in ([batch_id] if batch_id else journal.batches()):
        for c in journal.cards(bid):
            seen = lines.pop((bid, c.card_number), [])
            if c.state in wanted and not any(s.split(":")[-2] == wanted[c.state] for s in seen):
                problems.append(f"batch {bid} line {c.row} card {c.card_number}: {c.state} in the journal "
                                f"(station {c.station}) but no {wanted[c.state]} line in any station's log")
            for s in seen:
                path, n, event, station = s.rsplit(":", 3)
                if c.state not in wanted or wanted[c.state] != event:
                    problems.append(f"{path}: line {n}: {event} for card {c.card_number}, which the journal "
                                    f"has {c.state}")
    for (bid, number), seen in sorted(lines.items()):
        for s in seen:
            path, n, event, _ = s.rsplit(":", 3)
            problems.append(f"{path}: line {n}: {event} for card {number} of batch {bid}, which the journal "
                            "does not hold")
    return problems
