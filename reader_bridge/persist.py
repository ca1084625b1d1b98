"""Keeping a served card's image in step with the card."""

from __future__ import annotations

from cardos import image as card_image
from cardos.card import Card


class ImageSaver:
    """Saves a card to its image after a command changed it; skips the write when the command
    left the card as it was (a right PIN decrements and restores its counter, for one)."""

    def __init__(self, path: str, card: Card) -> None:
        from pathlib import Path
        card_image.remove_stale_temps(Path(path).parent or ".", Path(path).name)
        card.store.touched = set()
        self.path = path
        self.saved = dict(card.store.data)
        self.writes = 0

    def __call__(self, card: Card) -> None:
        store = card.store
        touched, store.touched = store.touched, set()
        missing = object()
        if not store.buffer and all(store.data.get(k, missing) == self.saved.get(k, missing) for k in touched):
            return
        card_image.save(card, self.path)
        self.saved = dict(store.data)
        self.writes += 1

    def retarget(self, path: str, card: Card) -> None:
        """Follow the next card of a feeder."""
        self.path, self.saved = path, dict(card.store.data)
        card.store.touched = set()
