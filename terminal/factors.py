"""Diversification factors as terminals and PSAMs take them (spec §3, psam.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

CITY_SUFFIX = b"sx"


def card_factor(atr: bytes) -> bytes:
    """The card's factor: the last 8 bytes of its ATR."""
    return bytes(atr[-8:])


def city_factor(card_id: str) -> bytes:
    """The city factor: ASCII of the first 6 hex digits of the card identification code ‖ "sx"."""
    region = card_id[:6]
    if len(region) != 6 or not region.isdigit():
        raise ValueError(f"card identification code {card_id[:6]!r}… does not start with a 6-digit region")
    return region.encode("ascii") + CITY_SUFFIX


@dataclass(frozen=True)
class Factors:
    """The factors of one card: its own (ATR) and its city's (region of EF05 tag 01), when known."""

    card: bytes
    city: bytes | None = None

    @classmethod
    def of(cls, atr: bytes, card_id: str | None = None) -> "Factors":
        return cls(card_factor(atr), city_factor(card_id) if card_id else None)
