"""The terminal's protocol steps, each written once: select a path, authenticate, MAC, check the card.

Every step talks through send(apdu, note) -> (data, sw), so a script runner, the conformance
suite and a reader program each keep their own log and error policy, and asks a SecurityModule
for every cryptogram.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cardos.crypto import mac_equal

from . import apdus
from .factors import Factors
from .security import KeyRef, SecurityModule
from .status import SELECTED, sw_name

Send = Callable[[bytes, str], tuple[bytes, int]]


class TerminalError(RuntimeError):
    """A step the card refused; names the step and the status word, never a secret."""

    def __init__(self, note: str, sw: int) -> None:
        super().__init__(f"{note}: card answered {sw:04X} ({sw_name(sw)})")
        self.note, self.sw = note, sw


def sender(transport) -> Send:
    """send() over a transport, 61xx and 6Cxx already followed."""
    def send(apdu: bytes, note: str = "") -> tuple[bytes, int]:
        resp = transport.transmit(apdu)
        return resp[:-2], (resp[-2] << 8) | resp[-1]
    return send


def select_path(send: Send, path: tuple[int, ...], ok: tuple[int, ...] = SELECTED) -> int:
    """Walk from the MF to path; the first SELECT answered outside ok stops the walk, its SW returned."""
    sw = 0x9000
    for fid, apdu in zip(path, apdus.select_path(path)):
        _, sw = send(apdu, f"select {fid:04X}")
        if sw not in ok:
            return sw
    return sw


def challenge(send: Send, note: str = "") -> bytes:
    data, sw = send(apdus.get_challenge(8), f"{note}: challenge" if note else "challenge")
    if sw != 0x9000:
        raise TerminalError(f"{note}: GET CHALLENGE" if note else "GET CHALLENGE", sw)
    return data


def external_authenticate(send: Send, sm: SecurityModule, ref: KeyRef, key_id: int, note: str = "",
                          with_challenge: bool | None = None) -> int:
    """GET CHALLENGE, then EXTERNAL AUTHENTICATE with the module's cryptogram; the card's SW.

    with_challenge sends E(K, R) ‖ R (Lc 10, the PSAM habit) on 3DES keys; by default the
    module decides (a PSAM module sets `appends_challenge`).
    """
    note = note or f"EXTERNAL AUTHENTICATE {key_id:02X}"
    block = apdus.challenge_block(sm.algorithm(ref), challenge(send, note))
    cryptogram = sm.encrypt(ref, block)
    if with_challenge is None:
        with_challenge = getattr(sm, "appends_challenge", False)
    if with_challenge and len(cryptogram) == 8:
        cryptogram += block
    return send(apdus.external_authenticate(key_id, cryptogram), note)[1]


def secured(send: Send, sm: SecurityModule, ref: KeyRef, cla: int, ins: int, p1: int, p2: int, body: bytes,
            note: str = "", good_mac: bool = True) -> int:
    """GET CHALLENGE, then the command with a MAC4 under ref (a zero MAC when good_mac is False)."""
    chal = challenge(send, note)
    mac = (lambda data: sm.mac(ref, chal, data)) if good_mac else (lambda data: bytes(4))
    return send(apdus.with_mac(cla, ins, p1, p2, body, mac), note)[1]


def check_card(send: Send, sm: SecurityModule, ref: KeyRef, key_id: int) -> str | None:
    """INTERNAL AUTHENTICATE with fresh random data: None when the card's answer matches what the
    security module computes, else what was wrong (the card is not genuine, or the keys differ)."""
    process, source = os.urandom(8), os.urandom(8)
    answer, sw = send(apdus.internal_authenticate(key_id, process, source), "INTERNAL AUTHENTICATE")
    if sw != 0x9000:
        return f"INTERNAL AUTHENTICATE answered {sw:04X} ({sw_name(sw)})"
    # The card answers E(SK, source), SK its key diversified by `process`.
    expected = sm.session_encrypt(ref, process, apdus.challenge_block(sm.algorithm(ref), source))
    if not mac_equal(answer, expected):
        return ("INTERNAL AUTHENTICATE: the card's cryptogram does not match the security module's "
                "(not a genuine card, or keys of another issuer)")
    return None


def read_factors(send: Send, atr: bytes) -> Factors:
    """The card's factors as a terminal finds them: ATR, and the region of EF05 tag 01 under SSSE."""
    _, sw = send(apdus.select_name(apdus.SSSE_NAME), "select SSSE")
    if sw not in SELECTED:
        return Factors.of(atr)
    data, sw = send(apdus.read_record(0x01, apdus.ISSUER_DATA_SFI), "card identification code")
    if sw != 0x9000 or len(data) < 5 or data[0] != 0x01:
        return Factors.of(atr)
    region = data[2:5].hex()
    return Factors.of(atr, region) if region.isdigit() else Factors.of(atr)
