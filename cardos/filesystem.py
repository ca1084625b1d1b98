"""The ISO 7816-4 file tree kept in the card's store: lookups, creation within budget, erase.

Store keys: ("H", path) a file's spec, ("B", path) its contents, ("K", df, type, id) a key
record, ("A", df) an application's life state. A path is the tuple of FIDs from the MF.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from . import sw
from .files import MAX_ANSWER, MF_FID, DedicatedFile, ElementaryFile, FileSpec, KeyFile, KeyRecord
from .nvm import Store
from .sw import CardError

Path = tuple[int, ...]
MF: Path = (MF_FID,)
MAX_DF_DEPTH = 3
MF_OVERHEAD = 11
NAME_CACHE = 64
_NONE: dict = {}  # what a DF without children indexes (never written)


class AppState(enum.IntEnum):
    """Life state of an application (DF): PBOC APPLICATION BLOCK sets the blocked ones."""

    ACTIVE = 0
    BLOCKED = 1
    LOCKED = 2


class FileSystem:
    """A view of the file tree in a store; the index of children is derived and cached."""

    def __init__(self, store: Store, capacity: int) -> None:
        self.store = store
        self.capacity = capacity
        self._seen = -1   # the store generation the index was built at
        self._children: dict[Path, dict[int, Path]] = {}
        self._sfis: dict[Path, dict[int, tuple[Path, ElementaryFile]]] = {}
        self._record_sfis: dict[Path, dict[int, Path]] = {}   # _sfis, the record EFs only
        self._names: list[tuple[bytes, Path]] = []
        self._inactive: dict[Path, AppState] = {}
        self._key_files: dict[Path, Path] = {}
        self._by_name: dict[tuple[bytes, Path], Path | None] = {}

    # -- index --------------------------------------------------------------------------
    def _rebuild(self) -> None:
        # Every lookup tests freshness inline before calling this (a command makes several).
        children: dict[Path, dict[int, Path]] = {}
        sfis: dict[Path, dict[int, tuple[Path, ElementaryFile]]] = {}
        names: list[tuple[bytes, Path]] = []
        inactive: dict[Path, AppState] = {}  # every DF not ACTIVE, by path
        key_files: dict[Path, Path] = {}
        for key, spec in self.store.items():
            if key[0] == "A" and spec:
                inactive[key[1]] = AppState(spec)
            if key[0] != "H":
                continue
            path = key[1]
            if len(path) > 1:
                children.setdefault(path[:-1], {})[path[-1]] = path
            if isinstance(spec, DedicatedFile) and spec.name:
                names.append((spec.name, path))
            elif isinstance(spec, KeyFile) and len(path) > 1:
                key_files.setdefault(path[:-1], path)
        for df, kids in children.items():
            for fid in sorted(kids, reverse=True):
                spec = self.store.get(("H", kids[fid]))
                if isinstance(spec, ElementaryFile):
                    sfis.setdefault(df, {})[fid & 0x1F] = (kids[fid], spec)
        # A header changes only by creating or erasing files, which rebuilds this index.
        record_sfis = {df: {sfi: p for sfi, (p, spec) in by_sfi.items() if spec.RECORDS}
                       for df, by_sfi in sfis.items()}
        names.sort(key=lambda item: len(item[1]))
        self._children, self._sfis, self._names, self._inactive = children, sfis, names, inactive
        self._record_sfis = record_sfis
        self._key_files, self._by_name = key_files, {}
        self._seen = self.store.generation

    def _touch(self) -> None:
        # Staged changes to the tree: the store's generation tells every index over it.
        self.store.generation += 1

    # -- lookups ------------------------------------------------------------------------
    def spec(self, path: Path) -> FileSpec | None:
        return self.store.get(("H", path))

    def exists(self, path: Path) -> bool:
        return ("H", path) in self.store

    def children(self, df: Path) -> dict[int, Path]:
        if self.store.generation != self._seen:
            self._rebuild()
        return self._children.get(df, {})

    def child(self, df: Path, fid: int) -> Path | None:
        return self.children(df).get(fid)

    def ef_by_sfi(self, df: Path, sfi: int) -> Path | None:
        """The working EF of df whose SFI is sfi (the lowest FID, should two share it)."""
        found = self.sfi_ef(df, sfi)
        return None if found is None else found[0]

    def sfi_ef(self, df: Path, sfi: int) -> tuple[Path, ElementaryFile] | None:
        """The working EF of df whose SFI is sfi, and its spec."""
        if self.store.generation != self._seen:
            self._rebuild()
        return self._sfis.get(df, _NONE).get(sfi)

    def records_by_sfi(self, df: Path, sfi: int) -> tuple[bytes, ...]:
        """The records of df's record EF with that SFI; none when the SFI names no file or a binary one."""
        if self.store.generation != self._seen:
            self._rebuild()
        path = self._record_sfis.get(df, _NONE).get(sfi)
        if path is None:
            return ()
        return self.store.get(("B", path))

    def df_by_name(self, name: bytes, near: Path) -> Path | None:
        """A DF by name: exact match first, nearest to `near` first, then a right-truncated match."""
        if self.store.generation != self._seen:
            self._rebuild()
        # Terminals select the same few names over and over: the answer holds until the tree changes.
        key = (bytes(name), near)
        try:
            return self._by_name[key]
        except KeyError:
            if len(self._by_name) >= NAME_CACHE:  # a terminal probing names must not grow it without end
                self._by_name.clear()
            found = self._by_name[key] = self._df_by_name(name, near)
            return found

    def _df_by_name(self, name: bytes, near: Path) -> Path | None:
        exact = [p for n, p in self._names if n == name]
        partial = [p for n, p in self._names if n.startswith(name) and n != name]
        for group in (exact, partial):
            if group:
                return min(group, key=lambda p: (not _under(p, near), len(p)))
        return None

    def key_file(self, df: Path) -> Path | None:
        if self.store.generation != self._seen:
            self._rebuild()
        return self._key_files.get(df)

    def walk(self, df: Path = MF) -> Iterator[tuple[Path, FileSpec]]:
        """Depth-first listing of the tree under df, df included."""
        spec = self.spec(df)
        if spec is None:
            return
        yield df, spec
        for fid in sorted(self.children(df)):
            yield from self.walk(df + (fid,))

    # -- contents -----------------------------------------------------------------------
    def body(self, path: Path):
        return self.store.get(("B", path))

    def set_body(self, path: Path, value) -> None:
        self.store.put(("B", path), value)

    # -- keys ---------------------------------------------------------------------------
    def key(self, df: Path, base_type: int, key_id: int) -> KeyRecord | None:
        return self.store.get(("K", df, base_type, key_id))

    def put_key(self, df: Path, record: KeyRecord) -> None:
        self.store.put(("K", df, record.type & 0x3F, record.id), record)   # record.base, without the property

    def write_key(self, df: Path, record: KeyRecord) -> None:
        """put_key committed at once, with what else is staged: a try counter is written before its verdict."""
        self.store.write(("K", df, record.type & 0x3F, record.id), record)

    def keys(self, df: Path) -> list[KeyRecord]:
        return sorted((v for k, v in self.store.items() if k[0] == "K" and k[1] == df),
                      key=lambda r: (r.base, r.id))

    def key_space_left(self, df: Path) -> int:
        kf = self.key_file(df)
        if kf is None:
            return 0
        return self.spec(kf).size - sum(r.cost() for r in self.keys(df))

    # -- budget -------------------------------------------------------------------------
    def space(self, df: Path) -> int:
        """Bytes a DF offers its children: its reserved size (the MF: the card's capacity)."""
        spec = self.spec(df)
        if df == MF:
            return min(spec.size, self.capacity - MF_OVERHEAD)
        return spec.size

    def used_in(self, df: Path) -> int:
        return sum(self.spec(p).cost() for p in self.children(df).values())

    def free(self, df: Path) -> int:
        return self.space(df) - self.used_in(df)

    def used(self) -> int:
        """EEPROM bytes taken on the whole card, MF overhead included."""
        return (MF_OVERHEAD + self.used_in(MF)) if self.exists(MF) else 0

    # -- changes ------------------------------------------------------------------------
    def create(self, df: Path, spec: FileSpec) -> Path:
        """Create a file under df (or the MF itself); 6A86 exists, 6A84 no space, 6A80 too deep."""
        if spec.fid == MF_FID:
            if self.exists(MF):
                raise CardError(sw.WRONG_P1P2, "MF exists")
            self.store.put(("H", MF), spec)
            self._touch()
            return MF
        if spec.fid in (0x3FFF, 0xFFFF) or spec.fid in self.children(df) or spec.fid == df[-1]:
            raise CardError(sw.WRONG_P1P2, f"FID {spec.fid:04X} exists or is reserved here")
        if isinstance(spec, DedicatedFile) and len(df) >= MAX_DF_DEPTH + 1:
            raise CardError(sw.WRONG_DATA, "DF nesting deeper than 3 levels")
        if isinstance(spec, DedicatedFile) and spec.name and any(
                self.spec(p).name == spec.name for p in self.children(df).values()
                if isinstance(self.spec(p), DedicatedFile)):
            raise CardError(sw.WRONG_P1P2, "a sibling DF has that name")
        if isinstance(spec, KeyFile) and self.key_file(df) is not None:
            raise CardError(sw.WRONG_P1P2, "the DF has a key file already")
        if isinstance(spec, ElementaryFile) and spec.sfi == self.spec(df).fci_sfi and not self.spec(df).fci_fits(spec):
            raise CardError(sw.WRONG_DATA, f"as the DF's FCI file, EF {spec.fid:04X} could make SELECT answer "
                                           f"more than {MAX_ANSWER} bytes")
        if spec.cost() > self.free(df):
            raise CardError(sw.NOT_ENOUGH_MEMORY, f"{spec.cost()} bytes asked, {self.free(df)} free")
        path = df + (spec.fid,)
        self.store.put(("H", path), spec)
        if isinstance(spec, ElementaryFile):
            self.store.put(("B", path), spec.empty_body())
        self._touch()
        return path

    def erase(self, df: Path) -> None:
        """Remove every file, key and state under df; df itself stays."""
        for key, _ in list(self.store.items()):
            if key[0] not in ("H", "B", "A", "K") or not _under(key[1], df):
                continue
            # The DF's own keys go with its key file; its own header and life state stay.
            if key[0] == "K" or key[1] != df:
                self.store.delete(key)
        self._touch()

    def app_state(self, df: Path) -> AppState:
        return AppState(self.store.get(("A", df), AppState.ACTIVE))

    def set_app_state(self, df: Path, state: AppState) -> None:
        self.store.put(("A", df), int(state))
        self._touch()

    def worst_state(self, path: Path) -> AppState:
        """The worst life state of path and the DFs above it (below the MF)."""
        if self.store.generation != self._seen:
            self._rebuild()
        if not self._inactive:
            return AppState.ACTIVE
        return max((s for df, s in self._inactive.items() if path[: len(df)] == df and len(df) > 1),
                   default=AppState.ACTIVE)


def _under(path: Path, top: Path) -> bool:
    return path[: len(top)] == top
