"""FMCOS 2.0 access bytes (spec §3b): evaluation against security states, and their compiler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ALWAYS = 0x00
NEVER = 0xEF


def permits(right: int, mf_state: int, df_state: int) -> bool:
    """True when access byte XY admits the current MF and DF security states."""
    x, y = right >> 4, right & 0x0F
    if x == 0:
        return mf_state >= y
    if x > y:
        return y <= df_state <= x
    if x == y:
        return df_state == x
    return False


@dataclass(frozen=True)
class SecurityState:
    """The RAM security state: MF and current DF levels 0-F, and whether rights are waived."""

    mf: int = 0
    df: int = 0
    fresh: bool = False

    def permits(self, right: int) -> bool:
        return self.fresh or permits(right, self.mf, self.df)


class AccessError(ValueError):
    """A symbolic access condition that cannot be compiled; the message names it."""


def compile_access(condition: str, credentials: Mapping[str, int]) -> int:
    """Compile a symbolic condition into an access byte.

    condition is "always", "never", "mf:N" (MF state at least N), "state:N" (DF state at
    least N), or credential names joined by "|" (e.g. "pin", "key:0A", "pin|key:0A").
    credentials maps each credential name to the DF state it sets (1-15).
    """
    cond = condition.strip().lower()
    if cond in ("always", "free", "00"):
        return ALWAYS
    if cond == "never":
        return NEVER
    if cond.startswith("mf:") or cond.startswith("state:"):
        kind, _, level = cond.partition(":")
        n = _level(level, condition)
        return n if kind == "mf" else (0xF0 | n)
    names = [c.strip() for c in cond.split("|") if c.strip()]
    if not names:
        raise AccessError(f"empty access condition {condition!r}")
    known = {k.lower(): v for k, v in credentials.items()}
    states = set()
    for name in names:
        if name not in known:
            raise AccessError(f"access condition {condition!r} names unknown credential {name!r}")
        states.add(_level(str(known[name]), name))
    lo, hi = min(states), max(states)
    admitted = {n for n, s in known.items() if lo <= s <= hi}
    if admitted - set(names):
        # An XY range is contiguous: a credential whose state falls inside it would pass too.
        extra = ", ".join(sorted(admitted - set(names)))
        raise AccessError(f"access condition {condition!r} would also admit {extra}: give credentials distinct states")
    return (hi << 4) | lo


def _level(text: str, where: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise AccessError(f"security level in {where!r} is not a number") from None
    if not 1 <= n <= 15:
        raise AccessError(f"security level in {where!r} must be 1..15, not {n}")
    return n


def describe(right: int) -> str:
    """A human reading of an access byte, for image info and reports."""
    x, y = right >> 4, right & 0x0F
    if right == ALWAYS:
        return "always"
    if x == 0:
        return f"MF state >= {y:X}"
    if x > y:
        return "always" if (y == 0 and x == 0xF) else f"DF state {y:X}..{x:X}"
    if x == y:
        return f"DF state = {x:X}"
    return "never"
