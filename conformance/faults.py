"""Deliberate defects QA switches on to prove its conformance suite catches them: each is a card-OS
hook (entry point group sscard.hooks, see cardos.plugins) that bends one of the card's checks."""

from __future__ import annotations

from dataclasses import replace

from cardos.card import Card
from cardos.files import KEY_PIN, KeyRecord
from cardos.plugins import Hook


class PinCounterStuck(Hook):
    """A wrong PIN does not decrement the try counter."""

    def tries_left(self, key: KeyRecord, counted: int) -> int:
        return key.tries_left if key.base == KEY_PIN else counted


class ReadRightsIgnored(Hook):
    """Every file reads without its access condition."""

    def waives(self, what: str) -> bool:
        return what == "read"


FAULTS = {"pin-counter-stuck": PinCounterStuck, "read-rights-ignored": ReadRightsIgnored}


def check(faults) -> None:
    """ValueError naming the faults QA does not know."""
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault mode(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")


def with_faults(card: Card, faults) -> Card:
    """The same card with these deliberate defects; ValueError names one QA does not know."""
    check(faults)
    return Card(card.store, replace(card.config, hooks=tuple(dict.fromkeys(faults))))
