"""What a card image holds, as a person reads it: its ATR, applets, EEPROM used and free, and its file tree."""

from __future__ import annotations

from .access import describe
from .card import Card
from .files import DedicatedFile, ElementaryFile, KeyFile, LinearFixedEF, TransparentEF, VariableRecordEF


def df_name(name: bytes) -> str:
    """A DF name as a person reads it: 'text' when it is printable GBK text, else hex (an AID)."""
    if not name:
        return ""
    try:
        text = name.decode("gbk")
    except UnicodeDecodeError:
        text = ""
    return repr(text) if text.isprintable() and text.strip() == text and text else name.hex().upper()


def _detail(path, spec, card: Card) -> str:
    if isinstance(spec, DedicatedFile):
        name = df_name(spec.name)
        return (f"name {name}, " if name else "") + \
            f"{card.fs.used_in(path)} of {card.fs.space(path)} bytes used, create {describe(spec.create_right)}"
    if isinstance(spec, KeyFile):
        keys = card.fs.keys(path[:-1])
        return f"{len(keys)} keys/PINs, {card.fs.key_space_left(path[:-1])} of {spec.size} bytes free"
    rights = f"read {describe(spec.read_right)}, write {describe(spec.write_right)}" \
        if isinstance(spec, (TransparentEF, LinearFixedEF, VariableRecordEF)) else ""
    if isinstance(spec, TransparentEF):
        return f"SFI {spec.sfi:02X}, {spec.size} bytes, {rights}"
    if isinstance(spec, (LinearFixedEF, VariableRecordEF)):
        n = len(card.fs.body(path))
        shape = f"{spec.count}×{spec.rec_len}" if isinstance(spec, LinearFixedEF) else f"{spec.size} bytes"
        return f"SFI {spec.sfi:02X}, {n} records ({shape}), {rights}"
    return ""


def describe_file(path, spec, card: Card) -> dict:
    """One file of the tree: its path, FID, kind and a one-line detail."""
    detail = _detail(path, spec, card)
    if isinstance(spec, ElementaryFile) and (spec.mac or spec.enc):
        detail += ", writes under " + ("MAC + encryption" if spec.enc else "MAC")
    return {"path": "/".join(f"{p:04X}" for p in path), "fid": f"{spec.fid:04X}", "kind": spec.KIND, "detail": detail}


def summary(card: Card) -> dict:
    """The card's capacity, use, ATR, applets and files (the card is powered on to walk its tree)."""
    card.power_on()
    files = [describe_file(p, spec, card) for p, spec in card.fs.walk()]
    used, cap = card.fs.used(), card.config.capacity
    return {"capacity": cap, "used": used, "free": cap - used, "atr": card.config.atr.hex().upper(),
            "applets": list(card.config.applets), "files": files}


def lines(s: dict) -> list[str]:
    """The summary as text, the file tree indented by depth."""
    out = [f"ATR {s['atr']}   applets: {', '.join(s['applets']) or 'none'}",
           f"EEPROM {s['used']} of {s['capacity']} bytes used, {s['free']} free"]
    return out + [f"{'  ' * f['path'].count('/')}{f['fid']} {f['kind']}: {f['detail']}" for f in s["files"]]
