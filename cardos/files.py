"""File and key specifications: one class per FMCOS 2.0 kind, its CREATE/WRITE data and its cost.

A spec is immutable; the contents of a file live apart in the card's store.
Costs (EEPROM bytes, spec §3b): DF 11 + name + reserved size; key file 8 + size (its keys,
key length + 8 each, fill that size); binary and variable-record files 8 + size; fixed and
cyclic files 8 + count × (record length + 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import construct as c

from . import sw
from .crypto import ALGORITHM_BY_ID, Algorithm
from .sw import CardError
from .tlv import tlv

MF_FID = 0x3F00
MAX_ANSWER = 256  # data bytes of a short APDU's answer

TYPE_DF = 0x38
TYPE_KEYFILE = 0x3F
TYPE_BINARY = 0x28
TYPE_FIXED = 0x2A
TYPE_VARIABLE = 0x2C
TYPE_CYCLIC = 0x2E
FLAG_MAC = 0x80
FLAG_ENC = 0x40

_DF = c.Struct(
    "type" / c.Int8ub, "size" / c.Int16ub, "create" / c.Int8ub, "erase" / c.Int8ub,
    "app_file_id" / c.Int8ub, "rfu" / c.Bytes(2), "name" / c.GreedyBytes,
)
_KEYFILE = c.Struct(
    "type" / c.Int8ub, "size" / c.Int16ub, "df_short_id" / c.Int8ub, "add" / c.Int8ub,
    "rfu" / c.Bytes(2), c.Terminated,
)
_SIZED_EF = c.Struct(
    "type" / c.Int8ub, "size" / c.Int16ub, "read" / c.Int8ub, "write" / c.Int8ub,
    "rfu" / c.Bytes(1), "control" / c.Int8ub, c.Terminated,
)
_RECORD_EF = c.Struct(
    "type" / c.Int8ub, "count" / c.Int8ub, "rec_len" / c.Int8ub, "read" / c.Int8ub,
    "write" / c.Int8ub, "rfu" / c.Bytes(1), "control" / c.Int8ub, c.Terminated,
)


def _parse(layout: c.Construct, data: bytes, what: str):
    try:
        return layout.parse(data)
    except c.ConstructError:
        raise CardError(sw.WRONG_LENGTH, f"{what} data of {len(data)} bytes does not fit its layout") from None


@dataclass(frozen=True)
class FileSpec:
    """A file the card knows by FID."""

    fid: int
    KIND: ClassVar[str] = "file"

    def cost(self) -> int:
        raise NotImplementedError

    def create_data(self) -> bytes:
        raise NotImplementedError

    @property
    def sfi(self) -> int:
        # The SFI is the FID's low 5 bits, as on the cards of spec §3b (FMCOS proper gives one only to 0001-001F).
        return self.fid & 0x1F


@dataclass(frozen=True)
class DedicatedFile(FileSpec):
    """A DF (MF, DDF or ADF): reserved space, create and erase rights, optional name (AID)."""

    size: int = 0
    create_right: int = 0x00
    erase_right: int = 0x00
    app_file_id: int = 0xFF
    name: bytes = b""
    KIND: ClassVar[str] = "DF"

    def cost(self) -> int:
        return 11 + len(self.name) + self.size

    def create_data(self) -> bytes:
        name = self.name
        if self.fid == MF_FID and not name:
            name = b"\xff" * 5
        return _DF.build(dict(type=TYPE_DF, size=self.size, create=self.create_right,
                              erase=self.erase_right, app_file_id=self.app_file_id,
                              rfu=b"\xff\xff", name=name))

    @classmethod
    def parse(cls, fid: int, data: bytes) -> DedicatedFile:
        p = _parse(_DF, data, "DF")
        name = bytes(p.name)
        if name and set(name) == {0xFF}:
            name = b""
        if fid != MF_FID and not 5 <= len(name) <= 16:
            raise CardError(sw.WRONG_DATA, f"DF name must be 5..16 bytes, not {len(name)}")
        return cls(fid, p.size, p.create, p.erase, p.app_file_id, name)

    @property
    def fci_sfi(self) -> int | None:
        """The SFI whose contents SELECT returns as proprietary FCI (app-file-id b8 set)."""
        return self.app_file_id & 0x1F if self.app_file_id != 0xFF and self.app_file_id & 0x80 else None

    def fci(self, proprietary: bytes | None = None) -> bytes:
        """The FCI SELECT answers: 6F {84 name | 83 FID} [A5 proprietary data from the app file]."""
        inner = tlv(0x84, self.name) if self.name else tlv(0x83, self.fid.to_bytes(2, "big"))
        if proprietary is not None:
            inner += tlv(0xA5, proprietary)
        return tlv(0x6F, inner)

    def fci_fits(self, app_file: ElementaryFile) -> bool:
        """True when SELECT's answer stays within a short answer however full app_file gets."""
        return len(self.fci(bytes(app_file.max_contents))) <= MAX_ANSWER


@dataclass(frozen=True)
class KeyFile(FileSpec):
    """The key file of a DF: holds its keys and PINs in size bytes; add right gates new keys."""

    size: int = 0
    df_short_id: int = 0x01
    add_right: int = 0x00
    KIND: ClassVar[str] = "key file"

    def cost(self) -> int:
        return 8 + self.size

    def create_data(self) -> bytes:
        return _KEYFILE.build(dict(type=TYPE_KEYFILE, size=self.size, df_short_id=self.df_short_id,
                                   add=self.add_right, rfu=b"\xff\xff"))

    @classmethod
    def parse(cls, fid: int, data: bytes) -> KeyFile:
        p = _parse(_KEYFILE, data, "key file")
        return cls(fid, p.size, p.df_short_id, p.add)


@dataclass(frozen=True)
class ElementaryFile(FileSpec):
    """A working EF: read and write (or append) rights, type flags and the control byte."""

    read_right: int = 0x00
    write_right: int = 0x00
    control: int = 0xFF
    mac: bool = False
    enc: bool = False
    TYPE: ClassVar[int] = 0
    RECORDS: ClassVar[bool] = True

    @property
    def type_byte(self) -> int:
        return self.TYPE | (FLAG_MAC if self.mac else 0) | (FLAG_ENC if self.enc else 0)

    @property
    def write_key_id(self) -> int:
        """Line-protection key for secured writes, from control bits 2-1."""
        return 3 - (self.control & 3)

    def empty_body(self):
        return ()

    @property
    def max_contents(self) -> int:
        """The most data bytes the file can hold."""
        raise NotImplementedError

    @staticmethod
    def _flags(type_byte: int) -> dict:
        return dict(mac=bool(type_byte & FLAG_MAC), enc=bool(type_byte & FLAG_ENC))


@dataclass(frozen=True)
class _SizedEF(ElementaryFile):
    """An EF whose FMCOS description gives a size in bytes (binary and variable-record files)."""

    size: int = 0

    def cost(self) -> int:
        return 8 + self.size

    @property
    def max_contents(self) -> int:
        return self.size

    def create_data(self) -> bytes:
        return _SIZED_EF.build(dict(type=self.type_byte, size=self.size, read=self.read_right,
                                    write=self.write_right, rfu=b"\xff", control=self.control))

    @classmethod
    def parse(cls, fid: int, data: bytes):
        p = _parse(_SIZED_EF, data, cls.KIND + " EF")
        return cls(fid, p.read, p.write, p.control, size=p.size, **cls._flags(p.type))


@dataclass(frozen=True)
class TransparentEF(_SizedEF):
    """A binary EF of size bytes, zero-filled at creation."""

    KIND: ClassVar[str] = "binary"
    TYPE: ClassVar[int] = TYPE_BINARY
    RECORDS: ClassVar[bool] = False

    def empty_body(self) -> bytes:
        return bytes(self.size)


@dataclass(frozen=True)
class VariableRecordEF(_SizedEF):
    """A variable-length (TLV) record EF: records tag ‖ len ‖ value within size bytes."""

    KIND: ClassVar[str] = "variable records"
    TYPE: ClassVar[int] = TYPE_VARIABLE


@dataclass(frozen=True)
class LinearFixedEF(ElementaryFile):
    """A linear fixed EF: up to count records of rec_len bytes, added by APPEND RECORD."""

    count: int = 0
    rec_len: int = 0
    KIND: ClassVar[str] = "fixed records"
    TYPE: ClassVar[int] = TYPE_FIXED

    def cost(self) -> int:
        return 8 + self.count * (self.rec_len + 1)

    @property
    def max_contents(self) -> int:
        return self.count * self.rec_len

    def create_data(self) -> bytes:
        return _RECORD_EF.build(dict(type=self.type_byte, count=self.count, rec_len=self.rec_len,
                                     read=self.read_right, write=self.write_right, rfu=b"\xff",
                                     control=self.control))

    @classmethod
    def parse(cls, fid: int, data: bytes) -> LinearFixedEF:
        p = _parse(_RECORD_EF, data, "record EF")
        if p.count < 1 or not 1 <= p.rec_len <= 248:
            raise CardError(sw.WRONG_DATA, f"record count {p.count} or length {p.rec_len} out of range")
        return cls(fid, p.read, p.write, p.control, count=p.count, rec_len=p.rec_len, **cls._flags(p.type))


@dataclass(frozen=True)
class CyclicEF(LinearFixedEF):
    """A cyclic EF: APPEND RECORD writes record 1 and the oldest record falls off."""

    KIND: ClassVar[str] = "cyclic records"
    TYPE: ClassVar[int] = TYPE_CYCLIC


_EF_KINDS = {k.TYPE: k for k in (TransparentEF, VariableRecordEF, LinearFixedEF, CyclicEF)}


def parse_create(fid: int, data: bytes) -> FileSpec:
    """Decode CREATE FILE data into the spec of the file it describes."""
    return _parse_create(fid, bytes(data))


# Specs are immutable, and loading images parses the same descriptions over and over.
@functools.lru_cache(maxsize=4096)
def _parse_create(fid: int, data: bytes) -> FileSpec:
    if not data:
        raise CardError(sw.WRONG_LENGTH, "CREATE FILE without data")
    t = data[0]
    if t == TYPE_DF:
        return DedicatedFile.parse(fid, data)
    if t == TYPE_KEYFILE:
        return KeyFile.parse(fid, data)
    kind = _EF_KINDS.get(t & ~(FLAG_MAC | FLAG_ENC))
    if kind is None:
        raise CardError(sw.WRONG_DATA, f"unknown file type {t:02X}")
    return kind.parse(fid, data)


# ---- keys -------------------------------------------------------------------------------

KEY_DES_ENC, KEY_DES_MAC, KEY_INTERNAL = 0x30, 0x32, 0x34  # FMCOS's DES decryption key (31) is never used
KEY_MAINTENANCE, KEY_PIN_UNBLOCK, KEY_PIN_RELOAD = 0x36, 0x37, 0x38
KEY_EXTERNAL, KEY_PIN = 0x39, 0x3A
# [ours] One part of an RSA private key, for an application that signs: id 01 its modulus, id 02 its
# private exponent. Big-endian, 64 to 240 bytes (512 to 1920 bits: a secured WRITE KEY still fits a short APDU).
KEY_RSA_PART = 0x3B
RSA_PART_LENGTHS = range(64, 241)
KEY_UPDATE_MAC, KEY_UPDATE_ENC = 0x40, 0x80
_COUNTED = {KEY_MAINTENANCE, KEY_PIN_UNBLOCK, KEY_PIN_RELOAD, KEY_EXTERNAL, KEY_PIN}

@dataclass(frozen=True)
class KeyRecord:
    """One key or PIN of a key file, as WRITE KEY loads it; the value never leaves the card."""

    type: int
    id: int
    use_right: int
    change_right: int
    value: bytes = field(repr=False)
    algorithm: Algorithm = Algorithm.TDES
    next_state: int = 0
    max_tries: int = 0
    tries_left: int = 0
    version: int = 0
    alg_byte: int = 0xFF

    @property
    def base(self) -> int:
        return self.type & 0x3F

    @property
    def counted(self) -> bool:
        return (self.type & 0x3F) in _COUNTED

    @property
    def blocked(self) -> bool:
        return self.tries_left == 0 and self.counted

    @property
    def needs_mac_to_change(self) -> bool:
        return bool(self.type & KEY_UPDATE_MAC)

    @property
    def needs_enc_to_change(self) -> bool:
        return bool(self.type & KEY_UPDATE_ENC)

    def cost(self) -> int:
        return len(self.value) + 8

    def with_tries(self, left: int) -> KeyRecord:
        top = self.max_tries
        return self._evolve("tries_left", 0 if left < 0 else top if left > top else left)

    def with_value(self, value: bytes) -> KeyRecord:
        return self._evolve("value", value)

    def _evolve(self, name: str, value: Any) -> KeyRecord:
        # dataclasses.replace re-runs the frozen __init__; a PIN try does this twice, so copy the fields.
        new = object.__new__(KeyRecord)
        fields = self.__dict__.copy()
        fields[name] = value
        object.__setattr__(new, "__dict__", fields)   # the copy handed over whole: no second dict filled
        return new

    def write_data(self) -> bytes:
        """The WRITE KEY data that loads this record (spec §3b formats)."""
        b = self.base
        counter = (self.max_tries << 4) | self.tries_left
        if b == KEY_PIN:
            return bytes([self.type, self.use_right, 0xEF, self.next_state, counter]) + self.value
        if b == KEY_EXTERNAL:
            return bytes([self.type, self.use_right, self.change_right, self.next_state, counter]) + self.value
        if b in _COUNTED:
            return bytes([self.type, self.use_right, self.change_right, 0xFF, counter]) + self.value
        return bytes([self.type, self.use_right, self.change_right, self.version, self.alg_byte]) + self.value

    @classmethod
    def parse(cls, key_id: int, data: bytes, default_alg: Algorithm) -> KeyRecord:
        """Decode WRITE KEY data; default_alg names the cipher of 16-byte keys that carry no algorithm byte."""
        if len(data) < 7:
            raise CardError(sw.WRONG_LENGTH, f"key record of {len(data)} bytes is too short")
        t, use, change, b3, b4, value = data[0], data[1], data[2], data[3], data[4], bytes(data[5:])
        base = t & 0x3F
        if not 0x30 <= base <= 0x3F:
            raise CardError(sw.WRONG_DATA, f"unknown key type {t:02X}")
        if base in _COUNTED:
            _check_counter(b4)
        if base == KEY_PIN:
            _check_pin(value)
            return cls(t, key_id, use, 0xEF, value, Algorithm.TDES, b3 & 0x0F, b4 >> 4, b4 & 0x0F)
        if base == KEY_RSA_PART:
            if len(value) not in RSA_PART_LENGTHS:
                raise CardError(sw.WRONG_LENGTH, f"an RSA key part is 64 to 240 bytes, not {len(value)}")
        elif len(value) not in (8, 16):
            raise CardError(sw.WRONG_LENGTH, f"key value must be 8 or 16 bytes, not {len(value)}")
        if base in _COUNTED:
            alg = _alg_for(value, None, default_alg)
            state = b3 & 0x0F if base == KEY_EXTERNAL else 0
            return cls(t, key_id, use, change, value, alg, state, b4 >> 4, b4 & 0x0F)
        return cls(t, key_id, use, change, value, _alg_for(value, b4, default_alg), version=b3, alg_byte=b4)


def _alg_for(value: bytes, alg_byte: int | None, default: Algorithm) -> Algorithm:
    named = ALGORITHM_BY_ID.get(alg_byte) if alg_byte is not None else None
    if len(value) == 8:
        return Algorithm.DES
    if named is Algorithm.SM4 or named is Algorithm.TDES:
        return named
    return default


def _check_counter(counter: int) -> None:
    # PINs and counted keys alike: a maximum of at least one try, and no more left than that.
    if counter >> 4 == 0 or (counter & 0x0F) > (counter >> 4):
        raise CardError(sw.WRONG_DATA, f"error counter {counter:02X} is not max/remaining")


def _check_pin(value: bytes) -> None:
    if not 2 <= len(value) <= 8:
        raise CardError(sw.WRONG_LENGTH, f"PIN must be 2..8 bytes, not {len(value)}")
    if pin_digits(value) is None:
        raise CardError(sw.WRONG_DATA, "PIN is not F-padded BCD")


def pin_digits(value: bytes) -> str | None:
    """The digits of an F-padded BCD PIN, or None when it is not one."""
    digits = value.hex().rstrip("f")  # hex() is lower case; what is left must be digits anyway
    if not digits or not digits.isdigit():
        return None
    return digits
