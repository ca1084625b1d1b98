"""Card profiles: one YAML file describing a card's COS settings, file tree, keys, PINs and data items.

A profile may `extend` another and override parts of it (dicts merge, lists are replaced, and a
DF or file can be named by its FID under `override`). Validation names the place in the file
and what is wrong, before any card is touched.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

import yaml

from applets.encoding import FORMATS as ENCODINGS
from cardos.access import AccessError, compile_access
from cardos.card import CosConfig
from cardos.crypto import Algorithm
from cardos.files import (KEY_DES_ENC, KEY_DES_MAC, KEY_EXTERNAL, KEY_INTERNAL, KEY_MAINTENANCE, KEY_PIN, KEY_PIN_RELOAD,
                          KEY_PIN_UNBLOCK, KEY_RSA_PART, CyclicEF, DedicatedFile, ElementaryFile, KeyFile,
                          LinearFixedEF, TransparentEF, VariableRecordEF)
from cardos.filesystem import MF_OVERHEAD
from cardos.tlv import tlv
from terminal.psam import BFDE, DES_INIT, PSAM_AID, PsamKeySlot

KEY_TYPES = {"external": KEY_EXTERNAL, "maintenance": KEY_MAINTENANCE, "pin_unblock": KEY_PIN_UNBLOCK,
             "pin_reload": KEY_PIN_RELOAD, "internal": KEY_INTERNAL, "pin": KEY_PIN,
             "des_enc": KEY_DES_ENC, "des_mac": KEY_DES_MAC, "icc_rsa": KEY_RSA_PART}
FORMATS = ENCODINGS + ("tlv",)  # the card's encodings, and TLV for items that hold data objects
BUILTIN = ("default", "sm4-3.00", "ss-1.00", "dda")


def is_pin(text: str) -> bool:
    """A PIN as the card takes it: 4 to 12 digits."""
    return text.isdigit() and 4 <= len(text) <= 12


class ProfileError(ValueError):
    """A profile that cannot describe a card; the message gives the place (e.g. tree.dfs[0].files[2])."""


@dataclass(frozen=True)
class Item:
    """One data item of a record file: its tag, format and length, and where its value comes from."""

    tag: int
    fmt: str
    length: int
    field: str | None = None
    value: str | None = None
    name: str = ""
    children: tuple["Item", ...] = ()
    variable: bool = False  # inside a tlv item: padding (F digits, 00 bytes) dropped, as EMV stores 5A, 5F20


@dataclass(frozen=True)
class KeyDecl:
    """A key or PIN a DF holds: type, id, rights, the master key it derives from, or the PIN's initial value."""

    type: int
    id: int
    master: str | None
    use: int
    change: int
    state: int
    tries: int
    initial_pin: str | None = None
    diversify: bool | str = True  # True: by the card factor; "pan": EMV option A (PAN ‖ PSN)
    algorithm: Algorithm = Algorithm.TDES
    where: str = ""
    levels: tuple[str, ...] = ("card",)   # diversification levels, highest first (psam.md §2)


LEVELS = ("province", "city", "card")


@dataclass(frozen=True)
class FileDecl:
    """An EF of the layout: its spec (FID, kind, size, compiled rights) and, for record files, its items."""

    spec: ElementaryFile
    items: tuple[Item, ...] = ()
    contents: str | None = None
    write_with: str | None = None
    where: str = ""


@dataclass(frozen=True)
class DFDecl:
    """A DF of the layout, with its key file, keys, EFs and child DFs."""

    spec: DedicatedFile
    key_file: KeyFile
    keys: tuple[KeyDecl, ...]
    files: tuple[FileDecl, ...]
    dfs: tuple["DFDecl", ...]
    credentials: dict[str, int] = field(default_factory=dict)
    where: str = ""
    role: str = ""
    extension: int = 0


@dataclass(frozen=True)
class PsamEntry:
    """One key of a PSAM's key table: where the PSAM keeps the master key, and how many levels it takes."""

    master: str
    slot: PsamKeySlot
    levels: int


@dataclass(frozen=True)
class PsamDecl:
    """The PSAM that goes with these cards (psam.md §2): its application and its key table."""

    aid: bytes
    fid: int
    atr: bytes
    keys: tuple[PsamEntry, ...]

    def slots(self) -> dict[str, PsamKeySlot]:
        return {e.master: e.slot for e in self.keys}


@dataclass(frozen=True)
class Profile:
    """A validated card profile."""

    name: str
    description: str
    generation: str
    config: CosConfig
    algorithm: Algorithm
    applets: tuple[str, ...]
    mf: DFDecl
    card_number_checked: bool
    digest: str
    source: dict
    psam: "PsamDecl | None" = None

    def walk(self):
        """Every DF, depth first, with its path of FIDs."""
        def rec(df: DFDecl, path):
            yield path, df
            for child in df.dfs:
                yield from rec(child, path + (child.spec.fid,))
        yield from rec(self.mf, (self.mf.spec.fid,))

    def role(self, role: str) -> tuple[tuple[int, ...], DFDecl]:
        for path, df in self.walk():
            if df.role == role:
                return path, df
        raise KeyError(role)


# ---- loading --------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """YAML that reads a 4-hex-digit scalar (0015, 3F00, 0800) as text, not as an octal or decimal number."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in "0123456789abcdefABCDEF":
    _Loader.yaml_implicit_resolvers.setdefault(_ch, []).insert(
        0, ("tag:yaml.org,2002:str", re.compile(r"^[0-9A-Fa-f]{4}$")))

def load(name_or_path: str | None = None) -> Profile:
    """Load a profile by built-in name (default, sm4-3.00, ss-1.00, dda) or path, and validate it."""
    doc = _read(name_or_path or "default", set())
    return build(doc)


def _read(name_or_path: str, seen: set) -> dict:
    if name_or_path in BUILTIN:
        text = resources.files("personalize").joinpath(f"profiles/{name_or_path}.yaml").read_text("utf-8")
        where = name_or_path
    else:
        try:
            text = FsPath(name_or_path).read_text("utf-8")
        except OSError as e:
            raise ProfileError(f"{name_or_path}: {e.strerror}") from None
        where = name_or_path
    if where in seen:
        raise ProfileError(f"{where}: extends itself")
    seen.add(where)
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ProfileError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: a profile is a mapping")
    base = doc.pop("extends", None)
    overrides = doc.pop("override", None)
    if base:
        parent = _read(base, seen)
        doc = _merge(parent, doc)
    if overrides:
        _apply_overrides(doc, overrides, where)
    return doc


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def _apply_overrides(doc: dict, overrides: dict, where: str) -> None:
    """override: {"DDF1/0006": {...}}: merge into the DF or file named by its FID path below the MF."""
    for target, patch in overrides.items():
        node = doc.get("tree")
        for fid in str(target).split("/"):
            kids = (node.get("dfs") or []) + (node.get("files") or []) if isinstance(node, dict) else []
            found = [k for k in kids if _fid(k.get("fid"), "") == _fid(fid, "")]
            if not found:
                raise ProfileError(f"{where}: override {target!r}: no DF or file {fid}")
            node = found[0]
        for k, v in patch.items():
            node[k] = v


# ---- building -------------------------------------------------------------------------------

def build(doc: dict) -> Profile:
    """Validate a profile document and compile its symbolic access conditions."""
    name = _str(doc, "name", "profile")
    cos = doc.get("cos") or {}
    alg = _choice(cos.get("algorithm", "3des"), {"3des": Algorithm.TDES, "sm4": Algorithm.SM4}, "cos.algorithm",
                  extra={"ssf33": "SSF33 is not public: no card can be made with it"})
    try:
        config = CosConfig(
            capacity=_int(cos.get("capacity", 32768), "cos.capacity"),
            atr=_hexbytes(cos.get("atr", "3B6D0000008C544CB386844116018593CA"), "cos.atr"),
            t0_get_response=_choice(cos.get("answers", "inline"), {"inline": False, "t0": True}, "cos.answers"),
            wrong_mac_sw=_int(cos.get("wrong_mac_sw", 0x6988), "cos.wrong_mac_sw"),
            key_algorithm=alg,
            applets=tuple(str(a) for a in doc.get("applets") or ()),
        )
    except ValueError as e:
        raise ProfileError(f"cos: {e}") from None
    generation = str(doc.get("generation", "2.00"))
    if generation not in ("1.00", "2.00", "3.00"):
        raise ProfileError(f"generation: {generation!r} is not 1.00, 2.00 or 3.00")
    tree = doc.get("tree")
    if not isinstance(tree, dict):
        raise ProfileError("tree: the MF is missing")
    mf = _df(tree, "tree", {}, alg, depth=0)
    if mf.spec.fid != 0x3F00:
        raise ProfileError("tree.fid: the top of the tree is the MF, 3F00")
    _check_budget(mf, config.capacity)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Profile(name, str(doc.get("description", "")), generation, config, alg,
                   tuple(doc.get("applets") or ()), mf, bool(doc.get("card_number_checked", True)), digest, doc,
                   _psam(doc.get("psam"), mf))


def _psam(node, mf: DFDecl) -> PsamDecl | None:
    """psam: {aid, fid, atr, keys: [{usage, index, master, init}]}; levels come from the card keys."""
    if node is None:
        return None
    if not isinstance(node, dict):
        raise ProfileError("psam: a mapping is needed")
    levels: dict[str, int] = {}

    def rec(df: DFDecl):
        for k in df.keys:
            if k.master:
                levels[k.master] = max(levels.get(k.master, 0), len(k.levels))
        for child in df.dfs:
            rec(child)
    rec(mf)
    entries, seen = [], set()
    for i, e in enumerate(node.get("keys") or []):
        where = f"psam.keys[{i}]"
        if not isinstance(e, dict):
            raise ProfileError(f"{where}: a mapping is needed")
        master = str(e.get("master", ""))
        if master not in levels:
            raise ProfileError(f"{where}.master: {master!r} is no card key's master in the tree")
        usage, index = _int(e.get("usage"), f"{where}.usage"), _int(e.get("index"), f"{where}.index")
        if not (0 <= usage <= 0xFF and 0 <= index <= 0xFF) or (usage, index) in seen:
            raise ProfileError(f"{where}: usage/index {usage:02X}/{index:02X} is out of range or used twice")
        seen.add((usage, index))
        init = str(e.get("init", DES_INIT)).lower()
        if init not in (DES_INIT, BFDE):
            raise ProfileError(f"{where}.init: {init!r} is not {DES_INIT} or {BFDE}")
        entries.append(PsamEntry(master, PsamKeySlot(usage, index, init), levels[master]))
    aid = _hexbytes(node.get("aid", PSAM_AID.hex()), "psam.aid")
    atr = _hexbytes(node.get("atr", "3B680000"), "psam.atr")
    return PsamDecl(aid, _fid(node.get("fid", "DF01"), "psam.fid"), atr, tuple(entries))


def _df(node: dict, where: str, inherited: dict[str, int], alg: Algorithm, depth: int) -> DFDecl:
    fid = _fid(node.get("fid"), f"{where}.fid")
    keys_in = node.get("keys") or []
    if not isinstance(keys_in, list):
        raise ProfileError(f"{where}.keys: a list of keys is needed")
    credentials = dict(inherited)
    # First pass: the state each credential of this DF sets, so that rights can name them.
    for i, k in enumerate(keys_in):
        kind = k.get("type") if isinstance(k, dict) else None
        if kind in ("pin", "external"):
            kid = _int(k.get("id", 0), f"{where}.keys[{i}].id")
            name = ("pin" if kid == 0 else f"pin:{kid:02x}") if kind == "pin" else f"key:{kid:02x}"
            credentials[name] = _int(k.get("state", 0), f"{where}.keys[{i}].state")

    def access(sym, place, default="never"):
        if isinstance(sym, int):
            return sym
        try:
            return compile_access(str(sym if sym is not None else default), credentials)
        except AccessError as e:
            raise ProfileError(f"{place}: {e}") from None

    keys = [_key(k, f"{where}.keys[{i}]", alg, access) for i, k in enumerate(keys_in)]

    name = _df_name(node.get("name"), f"{where}.name")
    files = tuple(_file(f, f"{where}.files[{i}]", access) for i, f in enumerate(node.get("files") or []))
    fids = [f.spec.fid for f in files]
    # Every DF gets a key file: without one it stays fresh and accepts any command for ever.
    kf_node = node.get("key_file") or {}
    if keys and not any(k.type == KEY_EXTERNAL and k.id == 0 for k in keys):
        raise ProfileError(f"{where}.keys: a DF with keys needs external key 00, under which the others are loaded")
    kfid = _fid(kf_node.get("fid", 0), f"{where}.key_file.fid")
    fids.append(kfid)
    size = _int(kf_node.get("size", sum(_key_cost(k) for k in keys) + 16), f"{where}.key_file.size")
    key_file = KeyFile(kfid, size, _int(kf_node.get("short_id", 0x01 if depth <= 1 else 0x95), f"{where}.key_file.short_id"),
                       access(kf_node.get("add", "never"), f"{where}.key_file.add"))
    need = sum(_key_cost(k) for k in keys)
    if need > size:
        raise ProfileError(f"{where}.key_file.size: its keys need {need} bytes, the key file has {size}")
    dfs = tuple(_df(d, f"{where}.dfs[{i}]", credentials, alg, depth + 1) for i, d in enumerate(node.get("dfs") or []))
    fids += [d.spec.fid for d in dfs]
    dup = {f for f in fids if fids.count(f) > 1}
    if dup:
        raise ProfileError(f"{where}: FID {min(dup):04X} is used twice")
    if depth > 3:
        raise ProfileError(f"{where}: DFs nest at most 3 deep")
    extension = _int(node.get("extension_area", 0), f"{where}.extension_area")
    children = sum(f.spec.cost() for f in files) + sum(d.spec.cost() for d in dfs) + key_file.cost()
    size = node.get("size", "auto")
    size = children + extension if size == "auto" else _int(size, f"{where}.size")
    if fid != 0x3F00 and children + extension > size:
        raise ProfileError(f"{where}.size: its files need {children + extension} bytes, it reserves {size}")
    spec = DedicatedFile(fid, 0xFFFF if fid == 0x3F00 else size, access(node.get("create", "never"), f"{where}.create"),
                         access(node.get("erase", "never"), f"{where}.erase"),
                         _int(node.get("fci_file", 0xFF), f"{where}.fci_file"), name)
    return DFDecl(spec, key_file, tuple(keys), files, dfs, credentials, where, str(node.get("role", "")), extension)


def _key(k: dict, where: str, alg: Algorithm, access) -> KeyDecl:
    if not isinstance(k, dict):
        raise ProfileError(f"{where}: a key is a mapping")
    kind = str(k.get("type", ""))
    if kind not in KEY_TYPES:
        raise ProfileError(f"{where}.type: {kind!r} is not one of {', '.join(KEY_TYPES)}")
    t = KEY_TYPES[kind]
    if t == KEY_RSA_PART:
        # The ICC's RSA key (EMV DDA): derived per card by PAN, its parts are key records 01 and 02.
        use, change = access(k.get("use", "always"), f"{where}.use"), access(k.get("change", "never"), f"{where}.change")
        return KeyDecl(t, 0x01, None, use, change, 0, 0, None, "pan", alg, where, ())
    kid = _int(k.get("id", 0), f"{where}.id")
    tries = _int(k.get("tries", 3 if t != KEY_INTERNAL else 0), f"{where}.tries")
    if t != KEY_INTERNAL and not 1 <= tries <= 15:
        raise ProfileError(f"{where}.tries: {tries} is not 1..15")
    state = _int(k.get("state", 0), f"{where}.state")
    if t in (KEY_EXTERNAL, KEY_PIN) and not 1 <= state <= 15:
        raise ProfileError(f"{where}.state: the security state it sets must be 1..15")
    use = access(k.get("use", "always"), f"{where}.use")
    change = access(k.get("change", "never"), f"{where}.change")
    if t == KEY_PIN:
        pin = str(k.get("initial", ""))
        if not is_pin(pin):
            raise ProfileError(f"{where}.initial: a PIN is 4..12 digits")
        return KeyDecl(t, kid, None, use, 0xEF, state, tries, pin, where=where)
    master = k.get("master")
    if not master:
        raise ProfileError(f"{where}.master: name the issuer master key it derives from")
    diversify = k.get("diversify", True)
    if diversify == "pan":
        # An EMV card key: diversified by the PAN (EMV Book 2 option A), not by the chip.
        return KeyDecl(t, kid, str(master), use, change, state, tries, None, "pan", alg, where, ())
    levels = _levels(diversify, f"{where}.diversify")
    return KeyDecl(t, kid, str(master), use, change, state, tries, None, bool(levels), alg, where, levels)


def _levels(v, where: str) -> tuple[str, ...]:
    """diversify: true (the card factor), false (none) or the levels highest first, e.g. [city, card]."""
    if isinstance(v, bool):
        return ("card",) if v else ()
    if not isinstance(v, list) or any(x not in LEVELS for x in v) or len(set(v)) != len(v):
        raise ProfileError(f"{where}: true, false, pan or a list of {', '.join(LEVELS)} (highest first)")
    order = [LEVELS.index(x) for x in v]
    if order != sorted(order):
        raise ProfileError(f"{where}: levels go from the highest down ({', '.join(LEVELS)})")
    return tuple(v)


def _key_cost(k: KeyDecl) -> int:
    """EEPROM bytes a key takes in its key file: value length + 8."""
    if k.type == KEY_RSA_PART:
        from .emv_icc import PART_BYTES, PARTS
        return PARTS * (PART_BYTES + 8)
    return ((len(k.initial_pin) + 1) // 2 if k.type == KEY_PIN else 16) + 8


def _file(f: dict, where: str, access) -> FileDecl:
    if not isinstance(f, dict):
        raise ProfileError(f"{where}: a file is a mapping")
    fid = _fid(f.get("fid"), f"{where}.fid")
    kind = f.get("kind", "records")
    read = access(f.get("read", "always"), f"{where}.read")
    write = access(f.get("write", "never"), f"{where}.write")
    control = _int(f.get("control", 0xFF), f"{where}.control")
    flags = dict(mac=bool(f.get("mac", False)), enc=bool(f.get("encrypted", False)))
    items = tuple(_item(it, f"{where}.records[{i}]") for i, it in enumerate(f.get("records") or []))
    if kind == "records":
        need = sum(it.length + 2 for it in items)
        size = f.get("size", "auto")
        size = need if size == "auto" else _int(size, f"{where}.size")
        if need > size:
            raise ProfileError(f"{where}.size: its records need {need} bytes, it has {size}")
        spec = VariableRecordEF(fid, read, write, control, size=size, **flags)
    elif kind == "binary":
        spec = TransparentEF(fid, read, write, control, size=_int(f.get("size"), f"{where}.size"), **flags)
        if spec.size <= 0:
            raise ProfileError(f"{where}.size: a binary file needs a size")
    elif kind in ("fixed", "cyclic"):
        cls = LinearFixedEF if kind == "fixed" else CyclicEF
        count, rec_len = _int(f.get("count"), f"{where}.count"), _int(f.get("record_length"), f"{where}.record_length")
        if count < 1 or not 1 <= rec_len <= 248:
            raise ProfileError(f"{where}: count must be ≥ 1 and record_length 1..248")
        spec = cls(fid, read, write, control, count=count, rec_len=rec_len, **flags)
    else:
        raise ProfileError(f"{where}.kind: {kind!r} is not records, binary, fixed or cyclic")
    contents = f.get("contents")
    if contents is not None:
        try:
            raw = bytes.fromhex(str(contents).replace(" ", ""))
        except ValueError:
            raise ProfileError(f"{where}.contents: not hex") from None
        if not isinstance(spec, TransparentEF) or len(raw) > spec.size:
            raise ProfileError(f"{where}.contents: only a binary file large enough takes contents")
    write_with = f.get("write_with")
    return FileDecl(spec, items, contents, str(write_with) if write_with else None, where)


def _item(it: dict, where: str, nested: bool = False) -> Item:
    tag = _int(it.get("tag"), f"{where}.tag")
    if not 1 <= tag <= (0xFFFF if nested else 0xFE):
        raise ProfileError(f"{where}.tag: {tag:#x} is out of range")
    fmt = str(it.get("format", "b"))
    if fmt not in FORMATS:
        raise ProfileError(f"{where}.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    fld, value, name = it.get("field"), it.get("value"), str(it.get("name", ""))
    if fmt == "tlv":
        kids = tuple(_item(c, f"{where}.items[{i}]", True) for i, c in enumerate(it.get("items") or []))
        if not kids:
            raise ProfileError(f"{where}.items: a tlv item holds items")
        length = sum(len(tlv(c.tag, bytes(c.length))) for c in kids)
        if length > 0xFD:
            raise ProfileError(f"{where}: its items take {length} bytes, a record holds 253")
        return Item(tag, fmt, length, None, None, name, kids)
    length = _int(it.get("length"), f"{where}.length")
    if not 1 <= length <= 0xFD:
        raise ProfileError(f"{where}.length: {length} is not 1..253")
    variable = bool(it.get("variable", False))
    if variable and (not nested or fmt not in ("cn", "an")):
        raise ProfileError(f"{where}.variable: only cn and an items inside a tlv item have a variable length")
    return Item(tag, fmt, length, str(fld) if fld else None, None if value is None else str(value), name,
                variable=variable)


def _check_budget(mf: DFDecl, capacity: int) -> None:
    need = MF_OVERHEAD + sum(f.spec.cost() for f in mf.files) + sum(d.spec.cost() for d in mf.dfs) + \
        mf.key_file.cost()
    if need > capacity:
        raise ProfileError(f"tree: the layout needs {need} bytes of EEPROM, the card has {capacity}")


# ---- scalar helpers ---------------------------------------------------------------------------

def _int(v, where: str) -> int:
    if isinstance(v, bool) or v is None:
        raise ProfileError(f"{where}: a number is needed")
    if isinstance(v, int):
        return v
    try:
        text = str(v).strip()
        return int(text, 10) if text.isdigit() else int(text, 0)
    except ValueError:
        raise ProfileError(f"{where}: {v!r} is not a number (hex needs 0x)") from None


def _fid(v, where: str) -> int:
    if isinstance(v, int):
        fid = v
    else:
        try:
            fid = int(str(v), 16)
        except ValueError:
            raise ProfileError(f"{where}: FID {v!r} is not 4 hex digits") from None
    if not 0 <= fid <= 0xFFFF or fid in (0x3FFF, 0xFFFF):
        raise ProfileError(f"{where}: FID {v!r} is out of range or reserved")
    return fid


def _hexbytes(v, where: str) -> bytes:
    try:
        return bytes.fromhex(str(v).replace(" ", ""))
    except ValueError:
        raise ProfileError(f"{where}: not hex") from None


def _str(doc: dict, key: str, where: str) -> str:
    v = doc.get(key)
    if not v:
        raise ProfileError(f"{key}: missing")
    return str(v)


def _choice(v, options: dict, where: str, extra: dict | None = None):
    key = str(v).lower()
    if extra and key in extra:
        raise ProfileError(f"{where}: {extra[key]}")
    if key not in options:
        raise ProfileError(f"{where}: {v!r} is not one of {', '.join(options)}")
    return options[key]


def _df_name(v, where: str) -> bytes:
    if v is None:
        return b""
    if isinstance(v, dict):
        if "hex" in v:
            return _hexbytes(v["hex"], where)
        text = str(v.get("text", ""))
        try:
            raw = text.encode(str(v.get("encoding", "ascii")))
        except (UnicodeEncodeError, LookupError) as e:
            raise ProfileError(f"{where}: {e}") from None
    else:
        raw = str(v).encode("ascii", errors="strict")
    if not 5 <= len(raw) <= 16:
        raise ProfileError(f"{where}: a DF name is 5..16 bytes, this one {len(raw)}")
    return raw
