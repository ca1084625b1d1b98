"""Reading a card as a terminal does, decoded by the profile's data items (spec §2)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from applets.encoding import decode
from applets.life import LIFE_SFI, LIFE_TAG, STATES
from cardos.apdu import build
from reader_bridge.transport import exchange
from cardos.crypto import mac_equal
from cardos.files import KEY_EXTERNAL, KEY_INTERNAL
from cardos.tlv import parse as parse_tlv

from .compile import card_key
from .script import Authenticate, ScriptError, run
from .fmcos import select_path
from .keys import KeyProvider
from .profile import Item, Profile

READ_KEY = 0x0A


class ReadError(RuntimeError):
    """The card refused a read the caller needs; says which and why."""


@dataclass
class Readout:
    """What a terminal reads from a card: items by field name, and what it could not read."""

    atr: str
    generation: str = ""
    items: dict[str, str] = field(default_factory=dict)
    life: dict[str, str] = field(default_factory=dict)
    authenticated: bool = False
    refused: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return self.items.get("name", "") + self.items.get("name_extension", "")

    def as_dict(self) -> dict:
        return {"atr": self.atr, "generation": self.generation, "full_name": self.full_name,
                "items": self.items, "life": self.life, "authenticated": self.authenticated,
                "refused": self.refused}


def _select_path(transport, path) -> int:
    """Walk from the MF to path; a blocked application is still selected (6A81, 9303)."""
    sw = 0x9000
    for apdu in select_path(path):
        _, sw = exchange(transport, apdu)
        if sw not in (0x9000, 0x6A81, 0x9303):
            return sw
    return sw


def check_card(send, keys: KeyProvider, ref, key_id: int) -> str | None:
    """INTERNAL AUTHENTICATE with fresh random data: None when the card's answer matches the
    issuer key, else what was wrong. send(apdu) -> (data, sw) lets callers log the exchange."""
    process, source = os.urandom(8), os.urandom(8)
    answer, sw = send(build(0x00, 0x88, 0x00, key_id, process + source))
    if sw != 0x9000:
        return f"INTERNAL AUTHENTICATE answered {sw:04X}"
    # The card answers E(SK, source), SK its key diversified by `process`.
    expected = keys.session_encrypt(ref, process, (source + bytes(16))[: keys.algorithm(ref).block])
    if not mac_equal(answer, expected):
        return "INTERNAL AUTHENTICATE: the card's cryptogram does not match the issuer key (not a genuine card)"
    return None


def authenticate_reader(transport, profile: Profile, keys: KeyProvider, factor: bytes) -> None:
    """3.00 reading: the terminal checks the card (INTERNAL AUTHENTICATE), then opens key 0A."""
    path, ssse = profile.role("ssse")
    ik = next((k for k in ssse.keys if k.type == KEY_INTERNAL), None)
    rk = next((k for k in ssse.keys if k.type == KEY_EXTERNAL and k.id == READ_KEY), None)
    if ik is None or rk is None:
        raise ReadError("the profile has no internal-authentication key or key 0A in SSSE")
    problem = check_card(lambda apdu: exchange(transport, apdu), keys, card_key(ik, factor), ik.id)
    if problem:
        raise ReadError(problem)
    try:
        run(transport.transmit, [Authenticate(READ_KEY, card_key(rk, factor), "key 0A")], keys)
    except ScriptError as e:
        raise ReadError(f"EXTERNAL AUTHENTICATE with key 0A answered {e.sw:04X}") from None


def read_card(transport, profile: Profile, keys: KeyProvider | None = None) -> Readout:
    """Read and decode every item with a field, and the life states, as a terminal would."""
    out = Readout(transport.atr().hex().upper())
    factor = transport.atr()[-8:]
    for path, df in profile.walk():
        files = [f for f in df.files if any(it.field for it in _flat(f.items)) or f.spec.sfi == LIFE_SFI]
        if not files:
            continue
        sw = _select_path(transport, path)
        if sw not in (0x9000, 0x6A81, 0x9303):
            out.refused.append(f"{path[-1]:04X}: SELECT {sw:04X}")
            continue
        if df.role == "ssse" and keys is not None and profile.generation == "3.00":
            authenticate_reader(transport, profile, keys, factor)
            out.authenticated = True
        for f in files:
            for n, it in enumerate(f.items, 1):
                data, sw = exchange(transport, build(0x00, 0xB2, n, (f.spec.sfi << 3) | 0x04, le=0))
                if sw != 0x9000:
                    out.refused.append(f"{f.spec.fid:04X} record {n} (tag {it.tag:02X}): {sw:04X}")
                    continue
                _decode_record(it, data, out, df.role)
    out.generation = out.items.get("spec_version", profile.generation)
    return out


def _flat(items):
    for it in items:
        yield it
        yield from _flat(it.children)


def _decode_record(it: Item, data: bytes, out: Readout, role: str) -> None:
    from .compile import as_stored
    value = as_stored(data)[2:]
    if it.tag == LIFE_TAG and it.fmt == "an":
        out.life[role] = STATES.get(decode("an", value), decode("an", value))
        return
    if it.children:
        found = dict(parse_tlv(value))
        for c in it.children:
            if c.field and c.tag in found:
                out.items[c.field] = decode(c.fmt, found[c.tag])
        return
    if it.field:
        out.items[it.field] = decode(it.fmt, value)
    elif it.tag == 0x03 and it.fmt == "an":
        out.items["spec_version"] = decode("an", value)
