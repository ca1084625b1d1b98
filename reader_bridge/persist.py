"""Keeping a card's image in step with the card."""

from __future__ import annotations

import logging
from pathlib import Path

from cardos import image as card_image
from cardos.card import Card

log = logging.getLogger("sscard.persist")
log.addHandler(logging.NullHandler())  # a one-shot command reports the error itself, in one line
_MISSING = object()


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
        if self.error is None and not store.buffer and self._unchanged(store.data, touched):
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
        if self.error is None:
            # Only the touched keys can differ from the last image: no copy of the whole store.
            self._remember(store.data, touched)
        else:
            self.saved = dict(store.data)    # what failed saves missed is not in touched
        self.writes += 1
        self.error = None

    def _unchanged(self, data: dict, touched: set) -> bool:
        saved = self.saved
        for key in touched:
            now, then = data.get(key, _MISSING), saved.get(key, _MISSING)
            # A right PIN puts back the very record it took out: no field-by-field comparison.
            if now is not then and now != then:
                return False
        return True

    def _remember(self, data: dict, touched: set) -> None:
        saved = self.saved
        for key in touched:
            value = data.get(key, _MISSING)
            if value is _MISSING:
                saved.pop(key, None)
            else:
                saved[key] = value

    def retarget(self, path: str, card: Card) -> None:
        """Follow the next card of a feeder."""
        self.path, self.saved, self.error = path, dict(card.store.data), None
        card.store.touched = set()
