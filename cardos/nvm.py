"""The card's EEPROM: a map of immutable values changed only by atomic, tear-safe commits.

A command stages its writes in RAM. commit() copies them into a persistent commit buffer,
sets the commit flag, applies them, then clears buffer and flag. A power cut at any of those
write steps leaves either the old state (flag unset: recovery drops the buffer) or the new
one (flag set: recovery applies the buffer again, which is idempotent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Hashable

DELETED = object()  # a staged or buffered removal


class PowerLoss(Exception):
    """The card lost power in the middle of an EEPROM write (raised only by the test hook)."""


class Store:
    """Persistent memory with one open transaction at a time."""

    def __init__(self, data: dict | None = None, buffer: list | None = None, commit_flag: bool = False) -> None:
        self.data: dict[Hashable, Any] = dict(data or {})
        self.buffer: list[tuple[Hashable, Any]] = list(buffer or [])
        # FMCOS's commit flag: set once the buffer is whole, cleared once it is applied to data.
        self.commit_flag = commit_flag
        self.staged: dict[Hashable, Any] = {}   # this command's writes, not yet committed
        # Bumped whenever the visible contents change other than by staging (rollback,
        # recovery, power cut), and by a file system that staged a change to the tree, so
        # derived indexes know to rebuild.
        self.generation = 0
        self.tear_at: int | None = None
        self.steps = 0
        self.commits = 0  # commits made through this object: whoever saves it knows when to
        self.touched: set = set()  # keys commits wrote since a saver last cleared this

    # -- reading and staging ------------------------------------------------------------
    def get(self, key: Hashable, default: Any = None) -> Any:
        pending = self.staged
        if pending and key in pending:
            v = pending[key]
            return default if v is DELETED else v
        return self.data.get(key, default)

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key, DELETED) is not DELETED

    def put(self, key: Hashable, value: Any) -> None:
        self.staged[key] = value

    def delete(self, key: Hashable) -> None:
        self.staged[key] = DELETED

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Every live entry, staged writes included."""
        for k, v in self.data.items():
            if k not in self.staged:
                yield k, v
        for k, v in self.staged.items():
            if v is not DELETED:
                yield k, v

    # -- committing ---------------------------------------------------------------------
    def write(self, key: Hashable, value: Any) -> None:
        """Stage one value and commit it with whatever else is staged (a try counter, say)."""
        if self.staged or self.tear_at is not None or self.buffer or self.commit_flag:
            self.staged[key] = value
            self.commit()
            return
        # The quick commit of one entry, as commit() would make it.
        self.data[key] = value
        self.commits += 1
        self.touched.add(key)
        self.steps += 4

    def commit(self) -> None:
        """Make the staged writes persistent as one unit."""
        if not self.staged:
            return
        if self.tear_at is None and not self.buffer and not self.commit_flag:
            # No power cut armed and no torn commit waiting: nothing can observe the buffer, so
            # apply the writes directly, counting the same steps (buffer entries, flag, applied
            # entries, flag cleared) as the path a tearing test walks.
            staged, self.staged = self.staged, {}
            self.commits += 1
            self.touched.update(staged)
            data = self.data
            for key, value in staged.items():
                if value is DELETED:
                    data.pop(key, None)
                else:
                    data[key] = value
            self.steps += 2 * len(staged) + 2
            return
        staged, self.staged = list(self.staged.items()), {}
        self.commits += 1
        self.touched.update(k for k, _ in staged)
        for entry in staged:
            self._step()
            self.buffer.append(entry)
        self._step()
        self.commit_flag = True
        self._apply_buffer()

    def rollback(self) -> None:
        """Forget the staged writes."""
        if self.staged:
            self.staged = {}
            self.generation += 1

    def recover(self) -> None:
        """At power-on: finish a commit whose flag was set, drop one whose flag was not."""
        self.staged = {}
        if self.commit_flag:
            self._apply_buffer()
        else:
            self.buffer.clear()
        self.generation += 1

    def _apply_buffer(self) -> None:
        for key, value in self.buffer:
            self._step()
            if value is DELETED:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self._step()
        self.buffer.clear()
        self.commit_flag = False

    # -- the tearing hook -----------------------------------------------------------------
    def _step(self) -> None:
        # Every EEPROM write passes here, so a test can cut power before any one of them.
        self.steps += 1
        if self.tear_at is not None and self.steps >= self.tear_at:
            self.tear_at = None
            self.staged = {}
            self.generation += 1
            raise PowerLoss(f"power cut at write step {self.steps}")

    def arm_tear(self, step: int) -> None:
        """Test hook: cut power before the step-th EEPROM write from now (1-based)."""
        self.steps = 0
        self.tear_at = step

    @staticmethod
    def is_deleted(value: Any) -> bool:
        return value is DELETED
