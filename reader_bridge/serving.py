"""Serving card images behind vpcd: fixed slots, or a hopper feeding a folder's cards one after another,
until SIGINT or SIGTERM; every image is brought up to date with its card when serving stops."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from cardos import image as card_image

from .persist import ImageSaver
from .vpcd import VpcdLink

Say = Callable[[str], None]  # one line of progress for the operator


class ServeError(Exception):
    """What is to be served cannot be: one line, and the exit status (2 for a damaged image)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _load(path: str):
    try:
        card = card_image.load(path)
    except card_image.ImageError as e:
        raise ServeError(str(e), 2) from None
    card.power_on()
    return card


def hopper_images(folder: str) -> tuple[str, ...]:
    images = tuple(str(p) for p in sorted(Path(folder).glob("*.json")))
    if not images:
        raise ServeError(f"{folder}: no card images (*.json)")
    return images


def _log(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")


def _run(links: list[VpcdLink], stop: threading.Event, started: Callable[[], None]) -> None:
    """Serve every link until a signal sets stop, then shut them down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threads = [link.start() for link in links]
    started()
    while not stop.wait(0.5):
        pass
    for link in links:
        link.shutdown()
    for t in threads:
        t.join(timeout=5)


def save_served(pairs) -> list[str]:
    """Bring each served image up to date with its card (only if it changed); the errors, one per image."""
    errors = []
    for saver, link in pairs:
        if link.card is not None:
            saver(link.card)
            if saver.error:
                errors.append(saver.error)
    return errors


def serve_slots(images: tuple[str, ...], host: str, port: int, verbose: bool, say: Say) -> None:
    """One card image per slot, slot n on port PORT+n."""
    _log(verbose)
    stop = threading.Event()
    links, savers = [], []
    for n, path in enumerate(images):
        card = _load(path)
        savers.append(ImageSaver(path, card))
        links.append(VpcdLink(card, host, port + n, on_change=savers[-1], stop=stop))
    def started():
        for n, path in enumerate(images):
            say(f"serving {path} on {host}:{port + n} (reader 'Virtual PCD 00 {n:02X}' when vpcd runs there)")
    _run(links, stop, started)
    unsaved = save_served(zip(savers, links))
    say(f"stopped; {sum(link.apdus for link in links)} APDUs served, "
        + ("images up to date" if not unsaved else f"NOT saved: {'; '.join(unsaved)}"))


class Hopper:
    """A card feeder: the next image goes in each time a card that was written to is powered down."""

    def __init__(self, images: tuple[str, ...], say: Say):
        self.queue, self.say = list(images), say
        self.path = self.queue.pop(0)
        self.first = _load(self.path)
        self.commits = self.first.store.commits
        self.saver = ImageSaver(self.path, self.first)

    def next_card(self, card):
        if card.store.commits == self.commits:
            return card                      # powered down unchanged: the same card stays in
        self.saver(card)
        following = None
        while following is None:
            if not self.queue:
                self.say(f"hopper empty after {self.path}")
                return None
            self.path = self.queue.pop(0)
            try:
                following = card_image.load(self.path)
            except card_image.ImageError as e:
                self.say(f"skipped: {e}")
        following.power_on()
        self.commits = following.store.commits
        self.saver.retarget(self.path, following)
        return following


def serve_hopper(images: tuple[str, ...], host: str, port: int, verbose: bool, say: Say) -> None:
    """A hopper of card images on one slot."""
    _log(verbose)
    hopper = Hopper(images, say)
    stop = threading.Event()
    link = VpcdLink(hopper.first, host, port, on_change=hopper.saver, stop=stop, next_card=hopper.next_card)
    _run([link], stop, lambda: say(f"serving a hopper of {len(images)} cards on {host}:{port}"))
    unsaved = save_served([(hopper.saver, link)])
    say(f"stopped; {link.apdus} APDUs served" + (f"; NOT saved: {unsaved[0]}" if unsaved else ""))
