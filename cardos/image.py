"""Card images: the card's EEPROM and COS settings as versioned, human-readable JSON.

Keys and PINs are stored in clear under fields named "secret_value", and the document says so
at its top: an image is a card, and is protected like one. Writes are atomic (temporary file,
fsync, rename), so a crash leaves the old image or the new one. A torn commit buffer is saved
as it is and finished or dropped when the card next powers on.

Loading trusts nothing: the text must be UTF-8 JSON of the document's shape, carry the SHA-256
digest of its contents (schema 2 on; schema 1 images have none and are read as they are), and
describe a state the card OS could be in (cardos.invariants). Any failure is one ImageError
naming the place; the file is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path as FsPath
from typing import Any

from . import jsonshape as js
from .card import Card, CosConfig, UnknownApplet
from .command import CARD_BLOCKED
from .crypto import Algorithm
from .files import (RSA_PART_LENGTHS, CyclicEF, DedicatedFile, KeyFile, KeyRecord, LinearFixedEF, TransparentEF, VariableRecordEF,
                    parse_create)
from .invariants import Broken, check_state, describe, path_text
from .nvm import DELETED, Store
from .sw import CardError

FORMAT = "sscard-card-image"
SCHEMA = 3
SECRETS_NOTE = ("This card image holds the card's keys and PINs in clear (fields 'secret_value'). "
                "Protect it as you would the card.")
DIGEST_PREFIX = "sha256:"
MAX_IMAGE_BYTES = 16 << 20  # a full 64 KiB card takes well under 2 MiB of JSON


class ImageError(ValueError):
    """A card image that cannot be loaded; the message names the file and the place."""


class DamagedImage(ImageError):
    """An image whose contents no longer match the digest saved with them."""


class SaveError(Exception):
    """A card image that cannot be written; the message names the file and why (nothing was written)."""
# ---- encoding ---------------------------------------------------------------------------

def _unpath(s: str) -> tuple[int, ...]:
    return tuple(int(part, 16) for part in s.split("/"))


def _encode(key: tuple, value: Any) -> dict:
    kind = key[0]
    if kind == "H":
        return {"file": path_text(key[1]), "kind": value.KIND, "create": value.create_data().hex().upper()}
    if kind == "B":
        if isinstance(value, bytes):
            return {"contents": path_text(key[1]), "binary": value.hex().upper()}
        return {"contents": path_text(key[1]), "records": [r.hex().upper() for r in value]}
    if kind == "K":
        r: KeyRecord = value
        return {"key": path_text(key[1]), "type": f"{r.type:02X}", "id": f"{r.id:02X}",
                "use": f"{r.use_right:02X}", "change": f"{r.change_right:02X}",
                "algorithm": r.algorithm.value, "next_state": r.next_state,
                "max_tries": r.max_tries, "tries_left": r.tries_left, "version": r.version,
                "alg_byte": f"{r.alg_byte:02X}", "secret_value": r.value.hex().upper()}
    if kind == "A":
        return {"application": path_text(key[1]), "state": int(value)}
    if key == CARD_BLOCKED:
        return {"card_blocked": bool(value)}
    raise ValueError(f"unknown store entry {key!r}")


def _decode(d: dict) -> tuple[tuple, Any]:
    if "file" in d:
        path = _unpath(d["file"])
        return ("H", path), parse_create(path[-1], bytes.fromhex(d["create"]))
    if "contents" in d:
        path = _unpath(d["contents"])
        if "binary" in d:
            return ("B", path), bytes.fromhex(d["binary"])
        return ("B", path), tuple(bytes.fromhex(r) for r in d["records"])
    if "key" in d:
        rec = KeyRecord(int(d["type"], 16), int(d["id"], 16), int(d["use"], 16), int(d["change"], 16),
                        bytes.fromhex(d["secret_value"]), Algorithm(d["algorithm"]), int(d["next_state"]),
                        int(d["max_tries"]), int(d["tries_left"]), int(d["version"]), int(d["alg_byte"], 16))
        return ("K", _unpath(d["key"]), rec.base, rec.id), rec
    if "application" in d:
        return ("A", _unpath(d["application"])), int(d["state"])
    if "card_blocked" in d:
        return CARD_BLOCKED, bool(d["card_blocked"])
    raise KeyError("entry has none of file, contents, key, application, card_blocked")


def to_document(card: Card) -> dict:
    """The JSON document of a card's persistent state."""
    store = card.store
    cfg = card.config
    entries = sorted((_encode(k, v) for k, v in store.data.items()), key=_order)
    buffer = [_deleted_entry(k) if Store.is_deleted(v) else _encode(k, v) for k, v in store.buffer]
    return {
        "format": FORMAT,
        "schema": SCHEMA,
        "secrets": SECRETS_NOTE,
        "config": {"capacity": cfg.capacity, "atr": cfg.atr.hex().upper(),
                   "t0_get_response": cfg.t0_get_response, "wrong_mac_sw": f"{cfg.wrong_mac_sw:04X}",
                   "key_algorithm": cfg.key_algorithm.value, "applets": list(cfg.applets),
                   "hooks": list(cfg.hooks)},
        "eeprom_used": card.fs.used(),
        "entries": entries,
        "commit_buffer": {"committed": store.commit_flag, "entries": buffer},
    }


def _order(e: dict) -> tuple:
    for rank, field in enumerate(("file", "contents", "key", "application", "card_blocked")):
        if field in e:
            return (str(e[field]), rank, e.get("type", ""), e.get("id", ""))
    return ("", 9)


def _deleted_entry(key: tuple) -> dict:
    kind = key[0]
    if kind == "K":
        return {"deleted": "key", "df": path_text(key[1]), "type": f"{key[2]:02X}", "id": f"{key[3]:02X}"}
    if kind in ("H", "B", "A"):
        return {"deleted": kind, "path": path_text(key[1])}
    return {"deleted": "card_blocked"}


def _undelete_key(d: dict) -> tuple:
    what = d["deleted"]
    if what == "key":
        return ("K", _unpath(d["df"]), int(d["type"], 16), int(d["id"], 16))
    if what in ("H", "B", "A"):
        return (what, _unpath(d["path"]))
    return CARD_BLOCKED


# ---- the document's shape ---------------------------------------------------------------

_PATH = js.Pattern(r"[0-9A-Fa-f]{4}(/[0-9A-Fa-f]{4}){0,4}", "a file path of FIDs such as 3F00/DF01/0005")
_BYTE = js.Hex(1, 1)
_KINDS = tuple(k.KIND for k in (DedicatedFile, KeyFile, TransparentEF, VariableRecordEF, LinearFixedEF, CyclicEF))
_ALGORITHMS = tuple(a.value for a in Algorithm)
_MAX_ENTRIES = 1 << 16
_PLUGIN = js.Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "a plug-in name (letters, digits, . _ -)")

_FILE = js.Obj({"file": _PATH, "kind": js.Str(_KINDS), "create": js.Hex(1, 24)})
_BINARY = js.Obj({"contents": _PATH, "binary": js.Hex(0, 0xFFFF)})
_RECORDS = js.Obj({"contents": _PATH, "records": js.List(js.Hex(1, 255), 0x8000)})
_KEY = js.Obj({"key": _PATH, "type": _BYTE, "id": _BYTE, "use": _BYTE, "change": _BYTE,
               "algorithm": js.Str(_ALGORITHMS), "next_state": js.Int(0, 15), "max_tries": js.Int(0, 15),
               "tries_left": js.Int(0, 15), "version": js.Int(0, 255), "alg_byte": _BYTE,
               "secret_value": js.Hex(1, RSA_PART_LENGTHS[-1])})     # the longest: an RSA key part
_APPLICATION = js.Obj({"application": _PATH, "state": js.Int(0, 2)})
_BLOCK_FLAG = js.Obj({"card_blocked": js.Bool()})
_ENTRY_CASES = (("file", None, _FILE), ("key", None, _KEY), ("application", None, _APPLICATION),
                ("card_blocked", None, _BLOCK_FLAG), ("binary", None, _BINARY), ("records", None, _RECORDS),
                ("contents", None, _BINARY))
_DELETED_PATH = js.Obj({"deleted": js.Str(("H", "B", "A")), "path": _PATH})
_DELETED_CASES = (("deleted", "key", js.Obj({"deleted": js.Str(("key",)), "df": _PATH, "type": _BYTE, "id": _BYTE})),
                  ("deleted", "H", _DELETED_PATH), ("deleted", "B", _DELETED_PATH), ("deleted", "A", _DELETED_PATH),
                  ("deleted", "card_blocked", js.Obj({"deleted": js.Str(("card_blocked",))})))
_CONFIG = js.Obj({"capacity": js.Int(1024, 0xFFFF + 11), "atr": js.Hex(2, 33), "t0_get_response": js.Bool(),
                  "wrong_mac_sw": js.Hex(2, 2), "key_algorithm": js.Str(_ALGORITHMS),
                  "applets": js.List(_PLUGIN, 16), "hooks": js.List(_PLUGIN, 16)})
_FIELDS = {
    "format": js.Str((FORMAT,)), "schema": js.Int(1, SCHEMA), "digest": js.Pattern(r"sha256:[0-9a-f]{64}", "sha256:…"),
    "secrets": js.Str(), "config": _CONFIG, "eeprom_used": js.Int(0, 0xFFFF + 11),
    "entries": js.List(js.Variants(_ENTRY_CASES), _MAX_ENTRIES),
    "commit_buffer": js.Obj({"committed": js.Bool(),
                             "entries": js.List(js.Variants(_DELETED_CASES + _ENTRY_CASES), _MAX_ENTRIES)}),
}
DOCUMENT = js.Obj(_FIELDS)
# Schemas 1 and 2 called the hooks "faults" (the only ones then were QA's deliberate defects).
_CONFIG_2 = js.Obj({**{k: v for k, v in _CONFIG.fields.items() if k != "hooks"}, "faults": js.List(_PLUGIN, 16)})
DOCUMENT_2 = js.Obj({**_FIELDS, "config": _CONFIG_2})
# Schema 1 had no digest and could leave out what later versions always write.
DOCUMENT_1 = js.Obj({**{k: v for k, v in _FIELDS.items() if k != "digest"},
                     "config": js.Obj(_CONFIG_2.fields, optional=frozenset({"applets", "faults"}))},
                    optional=frozenset({"secrets", "eeprom_used", "entries", "commit_buffer"}))


# ---- digest ---------------------------------------------------------------------------------

def digest(doc: dict) -> str:
    """The digest a document carries: SHA-256 of its canonical JSON, the digest field left out."""
    content = {k: v for k, v in doc.items() if k != "digest"}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           default=lambda o: o.text if isinstance(o, js.BadNumber) else str(o))
    return DIGEST_PREFIX + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def sealed(doc: dict) -> dict:
    """The document with its digest, placed after the schema so a reader meets it early."""
    out = {}
    for k, v in doc.items():
        if k != "digest":
            out[k] = v
        if k == "schema":
            out["digest"] = digest(doc)
    return out


# ---- decoding -------------------------------------------------------------------------------

def from_document(doc: Any, where: str = "image", verify: bool = True) -> Card:
    """Rebuild a card from its JSON document; ImageError names what is wrong.

    verify=False skips only the digest (image repair --accept, after a deliberate hand edit)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImageError(f"{where}: not an sscard card image (format field missing or wrong)")
    schema = doc.get("schema")
    if type(schema) is not int:
        raise ImageError(f"{where}: schema version missing")
    if schema > SCHEMA:
        raise ImageError(f"{where}: schema {schema} is newer than this sscard understands ({SCHEMA}); upgrade sscard")
    if schema >= 2 and verify:
        _check_digest(doc, where)
    try:
        js.check({1: DOCUMENT_1, 2: DOCUMENT_2}.get(schema, DOCUMENT), doc)
    except js.ShapeError as e:
        raise ImageError(f"{where}: {e}") from None
    config = _config(doc["config"], where)
    data, places = _entries(doc.get("entries", []), "entries", where)
    cb = doc.get("commit_buffer", {"committed": False, "entries": []})
    buffer, buffer_places = _buffer(cb["entries"], where)
    # Hold to the card's rules the state it will have once power-on finishes or drops the torn commit.
    recovered = dict(data)
    if cb["committed"]:
        places.update(buffer_places)
        for k, v in buffer:
            if v is DELETED:
                recovered.pop(k, None)
            else:
                recovered[k] = v
    try:
        check_state(recovered, config)
    except Broken as e:
        raise ImageError(f"{where}: {_place(e, places)}: {e}") from None
    try:
        card = Card(Store(data, buffer, cb["committed"]), config)
    except UnknownApplet as e:
        raise ImageError(f"{where}: config.applets: {e}") from None
    if "eeprom_used" in doc and doc["eeprom_used"] != card.fs.used():
        raise ImageError(f"{where}: eeprom_used: says {doc['eeprom_used']} bytes, the files take {card.fs.used()}")
    return card


def _check_digest(doc: dict, where: str) -> None:
    found = doc.get("digest")
    if not isinstance(found, str):
        raise DamagedImage(f"{where}: image damaged: its digest is missing")
    if found != digest(doc):
        raise DamagedImage(f"{where}: image damaged: its contents do not match its digest "
                           f"(after a deliberate edit: sscard image repair {where} --accept)")


def _config(c: dict, where: str) -> CosConfig:
    try:
        return CosConfig(capacity=c["capacity"], atr=bytes.fromhex(c["atr"]),
                         t0_get_response=c["t0_get_response"], wrong_mac_sw=int(c["wrong_mac_sw"], 16),
                         key_algorithm=Algorithm(c["key_algorithm"]), applets=tuple(c.get("applets", ())),
                         hooks=tuple(c.get("hooks", c.get("faults", ()))))
    except ValueError as e:
        raise ImageError(f"{where}: config: {e}") from None


def _entries(entries: list, name: str, where: str) -> tuple[dict, dict]:
    data, places = {}, {}
    for i, entry in enumerate(entries):
        place = f"{name}[{i}]"
        try:
            k, v = _decode(entry)
        except CardError as e:
            raise ImageError(f"{where}: {place}: {e.why or 'not a file the card takes'}") from None
        if k in data:
            raise ImageError(f"{where}: {place}: a second entry for the {describe(k)}")
        data[k], places[k] = v, place
    return data, places


def _buffer(entries: list, where: str) -> tuple[list, dict]:
    buffer, places = [], {}
    for i, entry in enumerate(entries):
        place = f"commit_buffer.entries[{i}]"
        try:
            k, v = (_undelete_key(entry), DELETED) if "deleted" in entry else _decode(entry)
        except CardError as e:
            raise ImageError(f"{where}: {place}: {e.why or 'not a file the card takes'}") from None
        buffer.append((k, v))
        places[k] = place
    return buffer, places


# Names of KeyRecord fields in the document.
_KEY_FIELDS = {"type": "type", "id": "id", "use_right": "use", "change_right": "change", "value": "secret_value",
               "algorithm": "algorithm", "next_state": "next_state", "max_tries": "max_tries",
               "tries_left": "tries_left", "version": "version", "alg_byte": "alg_byte"}


def _place(e: Broken, places: dict) -> str:
    place = places.get(e.key, "entries")
    return f"{place}.{_KEY_FIELDS.get(e.field, e.field)}" if e.field else place


# ---- files ------------------------------------------------------------------------------

TMP_PREFIX = ".sscard-tmp."


def remove_stale_temps(directory: str | os.PathLike, name: str = "") -> int:
    """Delete temporaries a killed save left in directory (of one image, or all); return how many."""
    n = 0
    for p in FsPath(directory).glob(f"{TMP_PREFIX}{name}*.tmp"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass  # gone already, or a directory we may not write: cleaning up is best effort
    return n


def save(card: Card, path: str | os.PathLike) -> None:
    """Write the card image atomically, keeping the file's mode (0600 for a new one); SaveError when it cannot."""
    target = FsPath(path)
    mode = _mode_for(target)
    text = json.dumps(sealed(to_document(card)), indent=1, ensure_ascii=False) + "\n"
    directory = target.parent if str(target.parent) else FsPath(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise SaveError(f"{path}: cannot write in {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise SaveError(f"{path}: cannot save: {e.strerror or e}") from None
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _mode_for(target: FsPath) -> int:
    try:
        st = target.stat()
    except FileNotFoundError:
        return 0o600
    except OSError as e:
        raise SaveError(f"{target}: cannot save: {e.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    # Renaming over a file needs no write permission on it; a read-only image says: leave me be.
    if not mode & 0o222:
        raise SaveError(f"{target}: cannot save: the image is read-only (mode {mode:04o})")
    return mode


def load(path: str | os.PathLike, verify: bool = True) -> Card:
    """Read a card image without changing it; ImageError when it is missing, damaged, invalid or newer."""
    return from_document(read_document(path), str(path), verify)


def read_document(path: str | os.PathLike) -> Any:
    """The JSON document of an image file, every number exact; ImageError when it is not one."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB, far more than any card holds")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ImageError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text, parse_float=js.BadNumber, parse_int=_int, parse_constant=js.BadNumber,
                          object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ImageError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except _DuplicateField as e:
        raise ImageError(f"{path}: field {e} appears twice in one object") from None
    except RecursionError:
        raise ImageError(f"{path}: nested too deeply to be a card image") from None


def _int(text: str) -> int | js.BadNumber:
    # Python refuses to convert more than 4300 digits; no field of a card needs more than 5.
    return int(text) if len(text) <= 20 else js.BadNumber(text)


class _DuplicateField(ValueError):
    pass


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateField(repr(k))
        out[k] = v
    return out


def unsealed(path: str | os.PathLike) -> Card | None:
    """A hand-edited image checked as loading checks it: its card when it carries no digest matching its
    contents, None when it does; ImageError when the contents fail a check."""
    doc = read_document(path)
    try:
        card = from_document(doc, str(path))
        if doc["schema"] >= 2:
            return None
    except DamagedImage:
        card = from_document(doc, str(path), verify=False)
    return card
