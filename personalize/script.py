"""APDU scripts: fixed commands plus the steps that need the card's challenge, and their runner."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cardos.apdu import build, split_response
from cardos.crypto import Algorithm
from terminal import flows
from terminal.security import KeyRef, SecurityModule

from .fmcos import Step

Transmit = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Authenticate:
    """GET CHALLENGE then EXTERNAL AUTHENTICATE with key key_id of the current DF."""

    key_id: int
    ref: KeyRef
    note: str = ""


@dataclass(frozen=True)
class KeyLoad:
    """WRITE KEY: prefix ‖ value of target (or prefix alone, e.g. a PIN record), plain 80 D4
    into a fresh DF or, with `under`, sealed and MACed (84 D4)."""

    p1: int
    key_id: int
    prefix: bytes
    target: KeyRef | None
    under: KeyRef | None = None
    note: str = ""


@dataclass(frozen=True)
class SealedLoad:
    """WRITE KEY 84 D4 of a record the provider makes at run time (an ICC private key part):
    make(keys) gives the whole key record, sealed and MACed under `under`; `shown` names it."""

    p1: int
    key_id: int
    make: Callable[[SecurityModule], bytes]
    under: KeyRef
    shown: str
    note: str = ""


@dataclass(frozen=True)
class Secured:
    """GET CHALLENGE then a command whose data carries a MAC4 under `ref` (line protection)."""

    cla: int
    ins: int
    p1: int
    p2: int
    body: bytes
    ref: KeyRef
    note: str = ""
    expect: tuple[int, ...] = (0x9000,)


@dataclass(frozen=True)
class Computed:
    """A command whose data the key provider must compute first (signed EMV records): make(keys) -> APDU."""

    make: Callable[[SecurityModule], bytes]
    shown: str
    note: str = ""


ScriptItem = Step | Authenticate | KeyLoad | SealedLoad | Secured | Computed


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


def run(transmit: Transmit, script: Iterable[ScriptItem], keys: SecurityModule | None = None) -> list[Exchange]:
    """Send a script; stop with ScriptError at the first unexpected status word."""
    log: list[Exchange] = []

    def send(index: int, apdu: bytes, note: str, secret: bool, expect=(0x9000,)) -> tuple[bytes, int]:
        resp = transmit(apdu)
        ex = Exchange(apdu, resp, note, secret)
        log.append(ex)
        if ex.sw not in expect:
            raise ScriptError(index, note, ex.sw)
        return split_response(resp)

    for i, item in enumerate(script, 1):
        if isinstance(item, Step):
            send(i, item.apdu, item.note, item.secret, item.expect)
            continue
        if keys is None:
            raise TypeError("this script needs a key provider")

        def tsend(apdu: bytes, note: str, i=i, final=getattr(item, "expect", (0x9000,))) -> tuple[bytes, int]:
            # GET CHALLENGE is no secret and must succeed; what follows carries a cryptogram or a MAC.
            challenge = apdu[1] == 0x84
            return send(i, apdu, note, not challenge, (0x9000,) if challenge else final)

        if isinstance(item, Authenticate):
            flows.external_authenticate(tsend, keys, item.ref, item.key_id, item.note)
        elif isinstance(item, KeyLoad) and item.under is None:
            value = keys.value_for_plain_load(item.target) if item.target else b""
            send(i, build(0x80, 0xD4, item.p1, item.key_id, item.prefix + value), item.note, True)
        elif isinstance(item, KeyLoad):
            sealed = (keys.seal_key_record(item.under, item.prefix, item.target) if item.target
                      else keys.seal(item.under, item.prefix))
            flows.secured(tsend, keys, item.under, 0x84, 0xD4, item.p1, item.key_id, sealed, item.note)
        elif isinstance(item, SealedLoad):
            sealed = keys.seal(item.under, item.make(keys))
            flows.secured(tsend, keys, item.under, 0x84, 0xD4, item.p1, item.key_id, sealed, item.note)
        elif isinstance(item, Computed):
            send(i, item.make(keys), item.note, False)
        elif isinstance(item, Secured):
            flows.secured(tsend, keys, item.ref, item.cla, item.ins, item.p1, item.p2, item.body, item.note)
        else:
            raise TypeError(f"unknown script item {item!r}")
    return log


def render(script: Iterable[ScriptItem], keys: SecurityModule | None = None, reveal: bool = False,
           algorithm_of: Callable[[KeyRef], Algorithm] | None = None) -> list[str]:
    """The script as annotated text: one command a line, `# note` after it.

    EXTERNAL AUTHENTICATE's Lc is the block of the key's algorithm (8 for 3DES, 16 for SM4), taken
    from algorithm_of, else from the key provider; without either it shows 08.

    Secrets (key values, PIN records, personal data marked secret) are masked unless reveal is
    set and a key provider is given; steps that depend on the card's challenge are shown as the
    commands they become, with the computed parts named.
    """
    from cardos import redact

    def secret_step(apdu: bytes) -> str:
        if reveal:
            return apdu.hex().upper()
        return redact.command(apdu) if apdu[1] in (0x20, 0x5E, 0x24, 0xD4, 0x82) else \
            apdu[:5].hex().upper() + f"<{len(apdu) - 5} bytes of personal data>"

    lines = []
    for i, item in enumerate(script, 1):
        if isinstance(item, Step):
            text = secret_step(item.apdu) if item.secret else item.apdu.hex().upper()
            lines.append(f"{text:<48} # {i}: {item.note}")
        elif isinstance(item, Authenticate):
            lines.append(f"{'0084000008':<48} # {i}: {item.note}: challenge")
            size = _cryptogram_size(item.ref, algorithm_of or (keys.algorithm if keys is not None else None))
            lines.append(f"{f'008200{item.key_id:02X}{size:02X} E({item.ref}, challenge)':<48} # {i}: {item.note}")
        elif isinstance(item, KeyLoad) and item.under is None:
            value = ""
            if reveal and keys is not None and item.target is not None:
                value = keys.value_for_plain_load(item.target).hex().upper()
            shown = (item.prefix.hex().upper() + value) if reveal else f"{item.prefix[:5].hex().upper()}<key {item.target}>"
            lines.append(f"{f'80D4{item.p1:02X}{item.key_id:02X}{len(item.prefix) + 16:02X}{shown}':<48} # {i}: {item.note}")
        elif isinstance(item, (KeyLoad, SealedLoad)):
            what = item.shown if isinstance(item, SealedLoad) else f"key {item.target}" if item.target else "record"
            lines.append(f"{'0084000008':<48} # {i}: {item.note}: challenge")
            lines.append(f"{f'84D4{item.p1:02X}{item.key_id:02X}.. seal({item.under}, {what}) MAC':<48} # {i}: {item.note}")
        elif isinstance(item, Computed):
            lines.append(f"{item.shown:<48} # {i}: {item.note}")
        elif isinstance(item, Secured):
            lines.append(f"{'0084000008':<48} # {i}: {item.note}: challenge")
            body = item.body.hex().upper() if reveal else f"<{len(item.body)} bytes>"
            lines.append(f"{f'{item.cla:02X}{item.ins:02X}{item.p1:02X}{item.p2:02X}.. {body} MAC({item.ref})':<48} # {i}: {item.note}")
    return lines


def _cryptogram_size(ref: KeyRef, algorithm_of) -> int:
    return algorithm_of(ref).block if algorithm_of is not None else 8
