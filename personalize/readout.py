"""Reading a card as a terminal does, decoded by the profile's data items (spec §2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from applets.encoding import decode
from applets.life import LIFE_SFI, LIFE_TAG, STATES
from cardos.crypto import Algorithm
from cardos.files import KEY_EXTERNAL, KEY_INTERNAL
from cardos.tlv import parse as parse_tlv
from terminal import apdus, flows
from terminal.factors import Factors
from terminal.security import SecurityModule, SecurityModuleError
from terminal.status import SELECTED, sw_name

from .compiler import card_key
from .profile import Item, Profile

READ_KEY = 0x0A
FLAGS = {0x01: Algorithm.TDES, 0x03: Algorithm.SM4}


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


def authenticate_reader(send, profile: Profile, keys: SecurityModule, factors: Factors) -> None:
    """3.00 reading (psam.md §1): the terminal checks the card (INTERNAL AUTHENTICATE), then opens key 0A."""
    path, ssse = profile.role("ssse")
    ik = next((k for k in ssse.keys if k.type == KEY_INTERNAL), None)
    rk = next((k for k in ssse.keys if k.type == KEY_EXTERNAL and k.id == READ_KEY), None)
    if ik is None or rk is None:
        raise ReadError("the profile has no internal-authentication key or key 0A in SSSE")
    ia, ra = card_key(ik, factors), card_key(rk, factors)
    fci, _ = send(apdus.select_name(apdus.SSSE_NAME), "select SSSE")
    flag = apdus.algorithm_flag(fci)
    try:
        ours = {name: keys.algorithm(ref) for name, ref in (("ia", ia), ("ra", ra))}
    except SecurityModuleError as e:
        raise ReadError(f"a 3.00 card, but the security module cannot check it or open key 0A (RKSSSE): {e}") from None
    if FLAGS.get(flag) not in ours.values() or len(set(ours.values())) != 1:
        raise ReadError(f"the card's algorithm flag is {apdus.FLAG_NAMES.get(flag, f'{flag:02X}')}; the security "
                        f"module's keys are {ours['ia'].value.upper()}")
    problem = flows.check_card(send, keys, ia, ik.id)
    if problem:
        raise ReadError(problem)
    sw = flows.external_authenticate(send, keys, ra, READ_KEY, "key 0A")
    if sw != 0x9000:
        raise ReadError(f"EXTERNAL AUTHENTICATE with key 0A (RKSSSE) answered {sw:04X} ({sw_name(sw)})")


PERSONAL_3_00 = ("personal data of a 3.00 card (EF06, EF0D, EF05 issue and expiry dates) is read only after "
                 "INTERNAL AUTHENTICATE and EXTERNAL AUTHENTICATE with key 0A: give --keys or --psam")


def card_version(send) -> str:
    """The specification version in EF05 tag 03 of the selected SSSE ("" when unreadable)."""
    data, sw = send(apdus.read_record(0x03, apdus.ISSUER_DATA_SFI, by_tag=True), "specification version")
    return decode("an", data[2:]) if sw == 0x9000 and data[:1] == b"\x03" else ""


def read_card(transport, profile: Profile, keys: SecurityModule | None = None) -> Readout:
    """Read and decode every item with a field, and the life states, as a terminal would.

    On a card whose EF05 says 3.00 the terminal first checks the card and opens key 0A (with the
    security module); without one, what stays closed is listed once, with why.
    """
    send = flows.sender(transport)
    out = Readout(transport.atr().hex().upper())
    factors = flows.read_factors(send, transport.atr())
    version = card_version(send)
    closed = version.startswith("3") and keys is None
    if closed:
        out.refused.append(PERSONAL_3_00)
    for path, df in profile.walk():
        files = [f for f in df.files if any(it.field for it in _flat(f.items)) or f.spec.sfi == LIFE_SFI]
        if not files:
            continue
        sw = flows.select_path(send, path)
        if sw not in SELECTED:
            out.refused.append(f"{path[-1]:04X}: SELECT {sw:04X}")
            continue
        if df.role == "ssse" and keys is not None and version.startswith("3"):
            authenticate_reader(send, profile, keys, factors)
            out.authenticated = True
        for f in files:
            for n, it in enumerate(f.items, 1):
                data, sw = send(apdus.read_record(n, f.spec.sfi), f"{f.spec.fid:04X} record {n}")
                if sw == 0x6982 and closed and df.role == "ssse":
                    continue                      # listed once above, with why
                if sw != 0x9000:
                    out.refused.append(f"{f.spec.fid:04X} record {n} (tag {it.tag:02X}): {sw:04X}")
                    continue
                _decode_record(it, data, out, df.role)
    out.generation = out.items.get("spec_version", version or profile.generation)
    return out


def _flat(items):
    for it in items:
        yield it
        yield from _flat(it.children)


def _decode_record(it: Item, data: bytes, out: Readout, role: str) -> None:
    from .compiler import as_stored
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


def lines(r: Readout, profile: Profile) -> list[str]:
    """The readout as a person reads it: each item under its name in the profile."""
    labels = {it.field: it.name for _, df in profile.walk() for f in df.files for it in _flat(f.items) if it.field}
    labels["spec_version"] = "specification version"
    out = [f"ATR {r.atr}   generation {r.generation}" + ("   (authenticated)" if r.authenticated else "")]
    if r.full_name:
        out.append(f"{'full name':32} {r.full_name}")
    out += [f"{labels.get(k, k):32} {v}" for k, v in r.items.items() if k not in ("name", "name_extension")]
    out += [f"{role + ' life state':32} {state}" for role, state in r.life.items()]
    if r.refused:
        out.append(f"refused: {'; '.join(r.refused)}")
    return out
