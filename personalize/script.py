"""APDU scripts: fixed commands plus the steps that need the card's challenge, and their runner."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cardos.apdu import split_response
from cardos.crypto import Algorithm
from cardos.files import KeyRecord

from . import fmcos
from .fmcos import Step

Transmit = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Authenticate:
    """GET CHALLENGE then EXTERNAL AUTHENTICATE with a key of the current DF."""

    key_id: int
    alg: Algorithm
    key: bytes = field(repr=False)
    note: str = ""


@dataclass(frozen=True)
class SecuredKeyLoad:
    """GET CHALLENGE then 84 D4: a key record sealed and MACed under the DF's 39/00 key."""

    record: KeyRecord
    alg: Algorithm
    master: bytes = field(repr=False)
    replace: bool = True
    note: str = ""


ScriptItem = Step | Authenticate | SecuredKeyLoad


class ScriptError(RuntimeError):
    """A script step got a status word it did not expect; names the step, never a secret."""

    def __init__(self, index: int, note: str, sw: int) -> None:
        super().__init__(f"step {index} ({note}): card answered {sw:04X}")
        self.index, self.note, self.sw = index, note, sw


@dataclass
class Exchange:
    """One command and its answer, as the runner saw them."""

    apdu: bytes
    response: bytes
    note: str
    secret: bool

    @property
    def sw(self) -> int:
        return split_response(self.response)[1]


def run(transmit: Transmit, script: Iterable[ScriptItem]) -> list[Exchange]:
    """Send a script; stop with ScriptError at the first unexpected status word."""
    log: list[Exchange] = []

    def send(index: int, apdu: bytes, note: str, secret: bool, expect=(0x9000,)) -> bytes:
        resp = transmit(apdu)
        ex = Exchange(apdu, resp, note, secret)
        log.append(ex)
        if ex.sw not in expect:
            raise ScriptError(index, note, ex.sw)
        return split_response(resp)[0]

    for i, item in enumerate(script, 1):
        if isinstance(item, Step):
            send(i, item.apdu, item.note, item.secret, item.expect)
        elif isinstance(item, Authenticate):
            chal = send(i, fmcos.get_challenge(8), f"{item.note}: challenge", False)
            send(i, fmcos.external_authenticate(item.alg, item.key, chal, item.key_id), item.note, True)
        elif isinstance(item, SecuredKeyLoad):
            chal = send(i, fmcos.get_challenge(8), f"{item.note}: challenge", False)
            apdu = fmcos.write_key_secured(item.record, item.alg, item.master, chal, item.replace)
            send(i, apdu, item.note, True)
        else:
            raise TypeError(f"unknown script item {item!r}")
    return log
