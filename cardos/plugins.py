"""The card OS's plug-in points, found by entry point: applets (sscard.applets) add instructions,
hooks (sscard.hooks) are consulted where the card checks an access right and counts a try of a PIN
or key. The card OS ships neither; a card's config names the ones it carries."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from .files import KeyRecord

HOOK_GROUP = "sscard.hooks"


class Hook:
    """A plug-in the card consults at its checks; this base bends none of them."""

    def waives(self, what: str) -> bool:
        """Whether an access the security state refuses goes through; what names it (read, write, key use …)."""
        return False

    def tries_left(self, key: KeyRecord, counted: int) -> int:
        """The try counter stored after one use of key, where the card itself counted `counted`."""
        return counted


@functools.lru_cache(maxsize=None)
def installed(group: str) -> tuple[str, ...]:
    """The names the installed packages provide in an entry point group, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=group)}))


@functools.lru_cache(maxsize=None)
def load(group: str, name: str) -> Any:
    """The object an entry point names; LookupError when no installed package provides it."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    raise LookupError(f"{name!r} is not installed (entry point group {group})")


def check_hooks(names: tuple[str, ...]) -> None:
    """ValueError naming the hooks no installed package provides."""
    unknown = sorted(set(names) - set(installed(HOOK_GROUP)))
    if unknown:
        raise ValueError(f"unknown hook(s) {', '.join(unknown)}; installed: {', '.join(installed(HOOK_GROUP))}")


def hooks(names: tuple[str, ...]) -> tuple[Hook, ...]:
    """A fresh instance of each named hook, in order."""
    return tuple(load(HOOK_GROUP, name)() for name in names)
