"""The rules every EEPROM state of the card keeps: what no sequence of commands can break.

The image loader holds a card image to them, and the tests hold the card to them after any
commands, so a state the loader takes is one the card OS could have reached, and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .card import CosConfig
from .command import CARD_BLOCKED
from .files import MF_FID, DedicatedFile, ElementaryFile, KeyFile, KeyRecord, LinearFixedEF, TransparentEF
from .filesystem import MAX_DF_DEPTH, MF, AppState, FileSystem, Path
from .nvm import Store
from .sw import CardError
from .tlv import is_simple_record

MAX_RECORD = 255  # the most one UPDATE or APPEND RECORD can carry
RESERVED_FIDS = (MF_FID, 0x3FFF, 0xFFFF)


class Broken(ValueError):
    """A state no card can be in: key names the store entry, field (if any) the part of it at fault."""

    def __init__(self, key: tuple, message: str, field: str | None = None) -> None:
        super().__init__(f"{describe(key)}: {message}")
        self.key, self.field, self.message = key, field, message


def describe(key: tuple) -> str:
    """A store key in words: file 3F00/DF01, contents of …, key 3A/00 of …, life state of …."""
    kind = key[0]
    if kind == "H":
        return f"file {path_text(key[1])}"
    if kind == "B":
        return f"contents of {path_text(key[1])}"
    if kind == "K":
        return f"key {key[2]:02X}/{key[3]:02X} of {path_text(key[1])}"
    if kind == "A":
        return f"life state of {path_text(key[1])}"
    return "card block flag" if key == CARD_BLOCKED else "entry"


def path_text(path: Path) -> str:
    return "/".join(f"{fid:04X}" for fid in path)


def check_state(data: Mapping[tuple, Any], config: CosConfig) -> None:
    """Raise Broken at the first rule of the card that the EEPROM contents data break."""
    fs = FileSystem(Store(dict(data)), config.capacity)
    key_bytes: dict[Path, int] = {}
    for key, value in data.items():
        kind = key[0]
        if kind == "H":
            _check_file(fs, key[1], value)
        elif kind == "B":
            _check_contents(fs, key, value)
        elif kind == "K":
            _check_key(fs, key, value, config)
            key_bytes[key[1]] = key_bytes.get(key[1], 0) + value.cost()
        elif kind == "A":
            _check_application(fs, key, value)
        elif key == CARD_BLOCKED:
            if type(value) is not bool:
                raise Broken(key, "must be true or false")
        else:
            raise Broken(key, "unknown kind of entry")
    for path, spec in fs.walk():
        if isinstance(spec, DedicatedFile):
            _check_df(fs, path, spec, key_bytes.get(path, 0))


def _check_file(fs: FileSystem, path: Path, spec: Any) -> None:
    key = ("H", path)
    if path[0] != MF_FID:
        raise Broken(key, "every path starts at the MF, 3F00")
    if spec.fid != path[-1]:
        raise Broken(key, f"describes FID {spec.fid:04X}")
    if path == MF:
        if not isinstance(spec, DedicatedFile):
            raise Broken(key, "the MF is a DF")
        return
    if path[-1] in RESERVED_FIDS:
        raise Broken(key, f"FID {path[-1]:04X} is reserved")
    if not isinstance(fs.spec(path[:-1]), DedicatedFile):
        raise Broken(key, "has no parent DF")
    if isinstance(spec, DedicatedFile) and len(path) > MAX_DF_DEPTH + 1:
        raise Broken(key, f"DFs nest at most {MAX_DF_DEPTH} levels below the MF")
    if isinstance(spec, ElementaryFile) and ("B", path) not in fs.store:
        raise Broken(key, "has no contents")


def _check_contents(fs: FileSystem, key: tuple, body: Any) -> None:
    spec = fs.spec(key[1])
    if not isinstance(spec, ElementaryFile):
        raise Broken(key, "belong to no EF")
    if isinstance(spec, TransparentEF):
        if not isinstance(body, bytes):
            raise Broken(key, "a binary EF holds bytes, not records")
        if len(body) != spec.size:
            raise Broken(key, f"{len(body)} bytes, the file's size is {spec.size}")
        return
    if not isinstance(body, tuple) or not all(isinstance(r, bytes) for r in body):
        raise Broken(key, f"a {spec.KIND} EF holds records, not bytes")
    for n, record in enumerate(body, 1):
        if not 1 <= len(record) <= MAX_RECORD:
            raise Broken(key, f"record {n} has {len(record)} bytes, at most {MAX_RECORD}")
    if isinstance(spec, LinearFixedEF):
        if len(body) > spec.count:
            raise Broken(key, f"{len(body)} records, the file holds {spec.count}")
        for n, record in enumerate(body, 1):
            if len(record) != spec.rec_len:
                raise Broken(key, f"record {n} has {len(record)} bytes, the file's records have {spec.rec_len}")
        return
    for n, record in enumerate(body, 1):
        if not is_simple_record(record):
            raise Broken(key, f"record {n} is not tag ‖ length ‖ value")
    used = sum(len(r) for r in body)
    if used > spec.size:
        raise Broken(key, f"records take {used} bytes, the file's size is {spec.size}")


def _check_key(fs: FileSystem, key: tuple, record: Any, config: CosConfig) -> None:
    df = key[1]
    if fs.key_file(df) is None:
        raise Broken(key, "its DF has no key file")
    if (record.base, record.id) != key[2:]:
        raise Broken(key, "filed under another type or id")
    if record.counted:
        if record.max_tries < 1:
            raise Broken(key, "a counted key or PIN allows at least one try", "max_tries")
        if record.tries_left > record.max_tries:
            raise Broken(key, f"{record.tries_left} tries left, more than the maximum {record.max_tries}",
                         "tries_left")
    # A record is one WRITE KEY could have loaded: the COS's own decoding gives it back unchanged.
    try:
        again = KeyRecord.parse(record.id, record.write_data(), config.key_algorithm)
    except CardError as e:
        raise Broken(key, e.why or "not a key WRITE KEY takes") from None
    for f in fields(KeyRecord):
        if getattr(again, f.name) != getattr(record, f.name):
            raise Broken(key, f"{f.name.replace('_', ' ')} is not what WRITE KEY loads", f.name)


def _check_application(fs: FileSystem, key: tuple, state: Any) -> None:
    if key[1] == MF or not isinstance(fs.spec(key[1]), DedicatedFile):
        raise Broken(key, "only an application DF below the MF has a life state")
    if type(state) is not int or state not in {s.value for s in AppState}:
        raise Broken(key, f"must be one of {', '.join(str(int(s)) for s in AppState)}")


def _check_df(fs: FileSystem, path: Path, spec: DedicatedFile, key_bytes: int) -> None:
    key = ("H", path)
    used, space = fs.used_in(path), fs.space(path)
    if used > space:
        raise Broken(key, f"its files take {used} bytes, it has {space}")
    kids = [(p, fs.spec(p)) for p in fs.children(path).values()]
    key_files = [k for p, k in kids if isinstance(k, KeyFile)]
    if len(key_files) > 1:
        raise Broken(key, "has more than one key file")
    names = [k.name for _, k in kids if isinstance(k, DedicatedFile) and k.name]
    if len(names) != len(set(names)):
        raise Broken(key, "two of its DFs share a name")
    for p, kid in kids:
        if isinstance(kid, ElementaryFile) and kid.sfi == spec.fci_sfi and not spec.fci_fits(kid):
            raise Broken(("H", p), "as its DF's FCI file it could make SELECT answer more than 256 bytes")
    if key_files and key_bytes > key_files[0].size:
        raise Broken(key, f"its keys take more than its key file's {key_files[0].size} bytes")

