"""What a command handler is and may answer: the narrow interface between the card and the
instruction table, so handlers and applets never import the card itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .apdu import Apdu

# The store key of the card-wide block flag (PBOC CARD BLOCK).
CARD_BLOCKED = ("CARD",)


@dataclass(frozen=True)
class Reply:
    """An answer whose status word the handler sets itself (GET RESPONSE's 61xx with data)."""

    data: bytes
    sw: int


# A handler takes the card (anything with the Card's methods) and the command APDU.
Handler = Callable[[Any, Apdu], "bytes | Reply"]


@dataclass(frozen=True)
class Command:
    """One instruction the card knows: its handler and the classes it accepts (channel bits clear)."""

    handler: Handler
    classes: frozenset[int]
    while_blocked: bool = False
