"""Card images: the card's EEPROM and COS settings as versioned, human-readable JSON.

Keys and PINs are stored in clear under fields named "secret_value", and the document says so
at its top: an image is a card, and is protected like one. Writes are atomic (temporary file,
fsync, rename), so a crash leaves the old image or the new one. A torn commit buffer is saved
as it is and finished or dropped when the card next powers on.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path as FsPath
from typing import Any

from .card import CARD_BLOCKED, Card, CosConfig, UnknownApplet
from .crypto import Algorithm
from .files import ElementaryFile, KeyRecord, TransparentEF, parse_create
from .nvm import DELETED, Store
from .sw import CardError

FORMAT = "sscard-card-image"
SCHEMA = 1
SECRETS_NOTE = ("This card image holds the card's keys and PINs in clear (fields 'secret_value'). "
                "Protect it as you would the card.")


class ImageError(ValueError):
    """A card image that cannot be loaded; the message names the file and the place."""


# ---- encoding ---------------------------------------------------------------------------

def _path(p: tuple[int, ...]) -> str:
    return "/".join(f"{fid:04X}" for fid in p)


def _unpath(s: str) -> tuple[int, ...]:
    return tuple(int(part, 16) for part in s.split("/"))


def _encode(key: tuple, value: Any) -> dict:
    kind = key[0]
    if kind == "H":
        return {"file": _path(key[1]), "kind": value.KIND, "create": value.create_data().hex().upper()}
    if kind == "B":
        if isinstance(value, bytes):
            return {"contents": _path(key[1]), "binary": value.hex().upper()}
        return {"contents": _path(key[1]), "records": [r.hex().upper() for r in value]}
    if kind == "K":
        r: KeyRecord = value
        return {"key": _path(key[1]), "type": f"{r.type:02X}", "id": f"{r.id:02X}",
                "use": f"{r.use_right:02X}", "change": f"{r.change_right:02X}",
                "algorithm": r.algorithm.value, "next_state": r.next_state,
                "max_tries": r.max_tries, "tries_left": r.tries_left, "version": r.version,
                "alg_byte": f"{r.alg_byte:02X}", "secret_value": r.value.hex().upper()}
    if kind == "A":
        return {"application": _path(key[1]), "state": int(value)}
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
                   "faults": sorted(cfg.faults)},
        "eeprom_used": card.fs.used(),
        "entries": entries,
        "commit_buffer": {"committed": store.committed, "entries": buffer},
    }


def _order(e: dict) -> tuple:
    for rank, field in enumerate(("file", "contents", "key", "application", "card_blocked")):
        if field in e:
            return (str(e[field]), rank, e.get("type", ""), e.get("id", ""))
    return ("", 9)


def _deleted_entry(key: tuple) -> dict:
    kind = key[0]
    if kind == "K":
        return {"deleted": "key", "df": _path(key[1]), "type": f"{key[2]:02X}", "id": f"{key[3]:02X}"}
    if kind in ("H", "B", "A"):
        return {"deleted": kind, "path": _path(key[1])}
    return {"deleted": "card_blocked"}


def _undelete_key(d: dict) -> tuple:
    what = d["deleted"]
    if what == "key":
        return ("K", _unpath(d["df"]), int(d["type"], 16), int(d["id"], 16))
    if what in ("H", "B", "A"):
        return (what, _unpath(d["path"]))
    return CARD_BLOCKED


def from_document(doc: dict, where: str = "image") -> Card:
    """Rebuild a card from its JSON document; ImageError names what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImageError(f"{where}: not an sscard card image (format field missing or wrong)")
    schema = doc.get("schema")
    if not isinstance(schema, int):
        raise ImageError(f"{where}: schema version missing")
    if schema > SCHEMA:
        raise ImageError(f"{where}: schema {schema} is newer than this sscard understands ({SCHEMA}); upgrade sscard")
    try:
        c = doc["config"]
        config = CosConfig(capacity=int(c["capacity"]), atr=bytes.fromhex(c["atr"]),
                           t0_get_response=bool(c["t0_get_response"]),
                           wrong_mac_sw=int(c["wrong_mac_sw"], 16),
                           key_algorithm=Algorithm(c["key_algorithm"]),
                           applets=tuple(str(a) for a in c.get("applets", ())),
                           faults=frozenset(str(f) for f in c.get("faults", ())))
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"{where}: config: {e}") from None
    data = {}
    for i, entry in enumerate(doc.get("entries", [])):
        try:
            k, v = _decode(entry)
        except (KeyError, TypeError, ValueError, CardError) as e:
            raise ImageError(f"{where}: entries[{i}]: {e}") from None
        data[k] = v
    buffer = []
    cb = doc.get("commit_buffer", {"committed": False, "entries": []})
    for i, entry in enumerate(cb.get("entries", [])):
        try:
            if "deleted" in entry:
                buffer.append((_undelete_key(entry), DELETED))
            else:
                buffer.append(_decode(entry))
        except (KeyError, TypeError, ValueError, CardError) as e:
            raise ImageError(f"{where}: commit_buffer.entries[{i}]: {e}") from None
    committed = bool(cb.get("committed", False))
    # Check the state the card will have once power-on finishes or drops the torn commit.
    recovered = dict(data)
    if committed:
        for k, v in buffer:
            if v is DELETED:
                recovered.pop(k, None)
            else:
                recovered[k] = v
    _check_consistent(recovered, where)
    try:
        return Card(Store(data, buffer, committed), config)
    except UnknownApplet as e:
        raise ImageError(f"{where}: {e}") from None


def _check_consistent(data: dict, where: str) -> None:
    for key, spec in data.items():
        if key[0] != "H":
            continue
        path = key[1]
        if len(path) > 1 and ("H", path[:-1]) not in data:
            raise ImageError(f"{where}: file {_path(path)} has no parent")
        if isinstance(spec, ElementaryFile):
            body = data.get(("B", path))
            if body is None:
                raise ImageError(f"{where}: file {_path(path)} has no contents")
            if isinstance(spec, TransparentEF) and len(body) != spec.size:
                raise ImageError(f"{where}: file {_path(path)} holds {len(body)} bytes, its size is {spec.size}")


# ---- files ------------------------------------------------------------------------------

TMP_PREFIX = ".sscard-tmp."


def remove_stale_temps(directory: str | os.PathLike, name: str = "") -> int:
    """Delete temporaries a killed save left in directory (of one image, or all); return how many."""
    n = 0
    for p in FsPath(directory).glob(f"{TMP_PREFIX}{name}*.tmp"):
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def save(card: Card, path: str | os.PathLike) -> None:
    """Write the card image atomically: the old file stays whole until the new one is."""
    target = FsPath(path)
    text = json.dumps(to_document(card), indent=1, ensure_ascii=False) + "\n"
    directory = target.parent if str(target.parent) else FsPath(".")
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load(path: str | os.PathLike) -> Card:
    """Read a card image; ImageError when it is missing, corrupt or of a newer schema."""
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImageError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    return from_document(doc, str(path))
