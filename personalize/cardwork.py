"""A card's work in a batch: its phases on a transport (initialization, personalization, read-back, save), run
in the station's own process or in one of its card worker processes.

Why processes: a virtual card is pure Python (the card OS, the scripts, the RSA and 3DES of the keys, the image's
JSON), so threads share one core. Why this split: the journal, the audit log and every claim stay with the
station's process, which alone writes them, in the order it assigns; a worker only does the CPU work of the card
it is handed and answers each phase. The station journals each step before it asks for it, exactly as it does
for a card in a reader, so a kill at any point leaves the journal where it was before: a half-made virtual card
is made again from its blank chip (same serial, same bytes), its stale temporary removed. A worker writes the
image atomically itself (temp + fsync + rename), so no image bytes cross the pipe. Workers claiming through the
journal themselves would each need a connection of their own, a share of the one audit chain a station writes,
and, on SQLite, of the lock that lets one process own the file: the station keeping them needs none of that.

The workers are forked when the batch starts, before the station opens its journal, audit log or lock, so no
worker holds a copy of them: the kernel frees the batch as soon as the station dies, and each worker dies with
it (PR_SET_PDEATHSIG, and its pipe closes). They inherit the profile, the compiled initialization script and the
keys instead of receiving them. Keys in a token (PKCS#11) stay in this process: a forked child cannot use the
parent's session, so with them the station keeps its workers as threads.

Readers keep one thread each in the station's process: the host's share of a card (compiling its script, the
keys' cryptograms and MACs, comparing the read-back: ~4 ms measured) is ~2 % of the ~260 ms its 400 APDUs take
through PC/SC, so a reader's thread waits on the card, not on a core.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

from cardos import image as card_image
from cardos import sw as SW
from terminal.factors import card_factor

from . import cardholders, virtual
from .compiler import perso_script
from .keys import KeyProvider
from .profile import Profile
from .script import ScriptError, run
from .verify import VerifyError, verify_card

AUTH_FAILURES = {SW.MAC_WRONG, SW.FMCOS_MAC_WRONG, SW.BLOCKED, SW.SECURITY_NOT_SATISFIED}


class CardFailed(RuntimeError):
    """A card worker's card failed a phase; the message is the quarantine reason."""


class WorkerError(RuntimeError):
    """A card worker stopped or broke; the message says which and why."""


def failures() -> tuple[type[BaseException], ...]:
    """What quarantines a card (anything else stops the station)."""
    from reader_bridge.transport import TransportError
    return ScriptError, VerifyError, cardholders.HolderError, TransportError, CardFailed


def failure(e: BaseException) -> str:
    """A quarantine reason without secrets; authentication failures say they are not retried."""
    if isinstance(e, ScriptError):
        auth = e.sw in AUTH_FAILURES or (e.sw & 0xFFF0) == SW.PIN_WRONG
        return f"step {e.note!r} answered {e.sw:04X}" + (" (authentication failure: not retried)" if auth else "")
    return str(e)


def _sws(log) -> list[str]:
    return [f"{ex.sw:04X}" for ex in log]


@dataclass
class Work:
    """What every card of a batch needs: the profile, the issuer keys, the rules, the initialization script."""

    profile: Profile
    keys: KeyProvider
    rules: cardholders.Rules
    init: list | None


class Phases:
    """One card on a transport taken through the phases; each returns what the journal and the audit line need."""

    saves = False

    def __init__(self, transport, work: Work) -> None:
        self.t, self.work = transport, work
        self.values: dict[str, str] = {}

    def atr(self) -> str:
        return self.t.atr().hex().upper()

    def init(self) -> list[str]:
        trail = _sws(run(self.t.transmit, self.work.init, self.work.keys))
        self.t.reset()
        return trail

    def perso(self, holder: dict[str, str]) -> list[str]:
        prof = self.work.profile
        factor = card_factor(self.t.atr())
        self.values = cardholders.values(holder, prof, factor, self.work.rules, checked=True)
        trail = _sws(run(self.t.transmit, perso_script(prof, self.values, factor), self.work.keys))
        self.t.reset()
        return trail

    def verify(self) -> int:
        return verify_card(self.t, self.work.profile, self.values, self.work.keys)

    def save(self) -> None:
        raise NotImplementedError


class ImagePhases(Phases):
    """A virtual card from its blank chip (serial from the batch and row) into its card image."""

    saves = True

    def __init__(self, work: Work, serial: bytes, path: str) -> None:
        from reader_bridge.transport import InProcess
        self.card, self.path = virtual.blank(work.profile, serial), path
        super().__init__(InProcess(self.card), work)

    def save(self) -> None:
        card_image.save(self.card, self.path)


# ---- card worker processes ---------------------------------------------------------------------------------

def can_fork(keys) -> bool:
    """Whether keys can go with a forked worker: keys held in this process's memory, not a token's session."""
    from .keys import SoftwareKeys
    return isinstance(keys, SoftwareKeys) and "fork" in multiprocessing.get_all_start_methods()


def _serve(conn, work: Work, station_ends, station: int) -> None:
    """A worker's life: one card at a time, one phase per message, until the station says stop or is gone."""
    import signal

    from .cardholders import die_with_parent
    die_with_parent(station)
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C is the station's to handle; it stops the pool
    for end in station_ends:
        end.close()             # the station's ends of this pipe and earlier ones: EOF here when the station dies
    card: Phases | None = None
    caught = failures()
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        if op == "stop":
            return
        try:
            if op == "open":
                card = ImagePhases(work, *args)
                reply = ("ok", card.atr())
            else:
                reply = ("ok", getattr(card, op)(*args))
        except caught as e:
            reply = ("failed", failure(e))
        except Exception as e:          # noqa: BLE001 - reported to the station, which stops with it
            reply = ("error", f"{type(e).__name__}: {e}")
        conn.send(reply)


class Worker:
    """The station's end of one card worker process."""

    def __init__(self, ctx, work: Work, n: int, earlier=()) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, work, [self.conn, *earlier], os.getpid()),
                                   name=f"sscard card worker {n}", daemon=True)
        self.process.start()
        child.close()
        self.name = f"card worker {n} (pid {self.process.pid})"

    def call(self, op: str, *args):
        try:
            self.conn.send((op, args))
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            raise WorkerError(f"{self.name} stopped unexpectedly (exit code {self.process.exitcode})") from None
        if kind == "failed":
            raise CardFailed(value)
        if kind == "error":
            raise WorkerError(f"{self.name}: {value}")
        return value

    def image(self, serial: bytes, path: str) -> "RemoteImage":
        return RemoteImage(self, self.call("open", serial, path))

    def close(self) -> None:
        try:
            self.conn.send(("stop", ()))
        except OSError:
            pass                            # gone already
        self.conn.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class RemoteImage:
    """A virtual card in a worker process, driven phase by phase like a card in this process."""

    saves = True

    def __init__(self, worker: Worker, atr: str) -> None:
        self.worker, self._atr = worker, atr

    def atr(self) -> str:
        return self._atr

    def init(self) -> list[str]:
        return self.worker.call("init")

    def perso(self, holder: dict[str, str]) -> list[str]:
        return self.worker.call("perso", holder)

    def verify(self) -> int:
        return self.worker.call("verify")

    def save(self) -> None:
        self.worker.call("save")


class Pool:
    """The station's card worker processes, forked with the batch's work; closed, they end."""

    def __init__(self, work: Work, n: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.work, self.workers = work, []
        try:
            for i in range(n):
                self.workers.append(Worker(ctx, work, i + 1, [w.conn for w in self.workers]))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for w in self.workers:
            w.close()


def default_workers() -> int:
    """One worker per core."""
    return os.cpu_count() or 1
