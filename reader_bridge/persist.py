"""Keeping a served card's image in step with the card."""

from __future__ import annotations

from cardos import image as card_image
from cardos.card import Card


class ImageSaver:
    """Saves a card to its image after a command changed it; skips the write when the command
    left the card as it was (a right PIN decrements and restores its counter, for one)."""

    def __init__(self, path: str, card: Card) -> None:
        self.path = path
        self.saved = dict(card.store.data)
        self.writes = 0

    def __call__(self, card: Card) -> None:
        if card.store.data == self.saved and not card.store.buffer:
            return
        card_image.save(card, self.path)
        self.saved = dict(card.store.data)
        self.writes += 1

    def retarget(self, path: str, card: Card) -> None:
        """Follow the next card of a feeder."""
        self.path, self.saved = path, dict(card.store.data)
