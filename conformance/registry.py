"""The list of conformance cases and the decorator that adds one: every case module registers
here, and the runner imports the case modules (so no case module imports another)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .context import CaseFailure, Context


@dataclass(frozen=True)
class Case:
    """One conformance check."""

    id: str
    title: str
    clause: str
    run: Callable[[Context], None]
    destructive: bool = False


CASES: list[Case] = []


def case(id: str, title: str, clause: str, destructive: bool = False):
    """Register the decorated function as a case with its id, title and the clause it checks."""
    def register(fn):
        CASES.append(Case(id, title, clause, fn, destructive))
        return fn
    return register


def check(cond: bool, message: str) -> None:
    """Fail the case with a message QA can file."""
    if not cond:
        raise CaseFailure(message)
