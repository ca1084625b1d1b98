"""Keeping a card's image in step with the card."""

from __future__ import annotations

import logging
from pathlib import Path

from cardos import image as card_image
from cardos.card import Card

log = logging.getLogger("sscard.persist")
log.addHandler(logging.NullHandler())  # a one-shot command reports the error itself, in one line


class ImageSaver:
    """Saves a card to its image after a command changed it; skips the write when the command
    left the card as it was (a right PIN decrements and restores its counter, for one).

    A save that fails does not stop the card (it may be serving a reader): the reason is logged
    once and kept in `error` until a later save succeeds."""

    def __init__(self, path: str, card: Card) -> None:
        card_image.remove_stale_temps(Path(path).parent or ".", Path(path).name)
        card.store.touched = set()
        self.path = path
        self.saved = dict(card.store.data)
        self.writes = 0
        self.error: str | None = None

    def __call__(self, card: Card) -> None:
        store = card.store
        touched, store.touched = store.touched, set()
        missing = object()
        if self.error is None and not store.buffer and all(
                store.data.get(k, missing) == self.saved.get(k, missing) for k in touched):
            return
        if self.error is not None and not store.buffer and store.data == self.saved:
            self.error = None        # changed and changed back: the image on disk is right again
            return
        try:
            card_image.save(card, self.path)
        except card_image.SaveError as e:
            if self.error != str(e):
                log.warning("%s; the card keeps running in memory", e)
            self.error = str(e)
            return
        self.saved = dict(store.data)
        self.writes += 1
        self.error = None

    def retarget(self, path: str, card: Card) -> None:
        """Follow the next card of a feeder."""
        self.path, self.saved, self.error = path, dict(card.store.data), None
        card.store.touched = set()
