"""READ/UPDATE BINARY and READ/UPDATE/APPEND RECORD (ISO 7816-4, spec §2-§3)."""

from __future__ import annotations

from .. import sw
from ..apdu import Apdu
from ..crypto import unseal
from ..files import KEY_MAINTENANCE, CyclicEF, ElementaryFile, LinearFixedEF, TransparentEF, VariableRecordEF
from ..filesystem import Path
from ..sw import CardError
from ..tlv import is_simple_record

# P2 bits 3-1 of record commands (ISO 7816-4 table 47/48).
BY_ID_FIRST, BY_ID_LAST, BY_ID_NEXT, BY_ID_PREVIOUS, BY_NUMBER = 0, 1, 2, 3, 4


def _ef(card, sfi: int | None) -> tuple[Path, ElementaryFile]:
    """The EF a command addresses: by SFI (which makes it current) or the current EF."""
    s = card.session
    if sfi:
        found = card.fs.sfi_ef(s.current_df, sfi)
        if found is None:
            raise CardError(sw.FILE_NOT_FOUND, f"no EF with SFI {sfi:02X}")
        if found[0] != s.current_ef:
            s.current_ef, s.record = found[0], None
        return found
    if s.current_ef is None:
        raise CardError(sw.NO_CURRENT_EF)
    return s.current_ef, card.fs.spec(s.current_ef)


def _writable(card, cmd: Apdu, spec: ElementaryFile) -> bytes:
    """The data of a write once its rights hold: a valid MAC stands for the right (spec §4)."""
    if cmd.secured:
        body, _, key = card.check_mac(cmd, KEY_MAINTENANCE, spec.write_key_id)
        if spec.enc:
            try:
                body = unseal(key.algorithm, key.value, body)
            except ValueError:
                raise CardError(sw.WRONG_DATA, "secured data does not decrypt") from None
        return body
    if (spec.mac or spec.enc) and not card.session.fresh:
        raise CardError(sw.SECURITY_NOT_SATISFIED, "this file is written under MAC only")
    card.require(spec.write_right, "write")
    return cmd.data


# ---- transparent files ------------------------------------------------------------------

def _binary_target(card, cmd: Apdu) -> tuple[Path, TransparentEF, int]:
    if cmd.p1 & 0x80:
        if cmd.p1 & 0x60:
            raise CardError(sw.WRONG_P1P2)
        path, spec = _ef(card, cmd.p1 & 0x1F)
        offset = cmd.p2
    else:
        path, spec = _ef(card, None)
        offset = (cmd.p1 << 8) | cmd.p2
    if not isinstance(spec, TransparentEF):
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "not a binary file")
    return path, spec, offset


def read_binary(card, cmd: Apdu) -> bytes:
    """READ BINARY: Le bytes from the offset; Le 00 or absent reads up to 256 to the end."""
    path, spec, offset = _binary_target(card, cmd)
    card.require(spec.read_right, "read")
    if offset >= spec.size:
        raise CardError(sw.OFFSET_BEYOND_FILE)
    avail = spec.size - offset
    if cmd.le in (None, 256):
        n = min(avail, 256)
    elif cmd.le > avail:
        raise CardError(sw.wrong_le(avail))
    else:
        n = cmd.le
    return card.fs.body(path)[offset : offset + n]


def update_binary(card, cmd: Apdu) -> bytes:
    """UPDATE BINARY: overwrite bytes from the offset."""
    path, spec, offset = _binary_target(card, cmd)
    if not cmd.lc_present:
        raise CardError(sw.WRONG_LENGTH, "no data")
    data = _writable(card, cmd, spec)
    if offset > spec.size:
        raise CardError(sw.OFFSET_BEYOND_FILE)
    if offset + len(data) > spec.size:
        raise CardError(sw.WRONG_LENGTH, f"{len(data)} bytes at offset {offset} pass the end of {spec.size}")
    body = card.fs.body(path)
    card.fs.set_body(path, body[:offset] + data + body[offset + len(data):])
    return b""


# ---- record files -----------------------------------------------------------------------

def _record_target(card, cmd: Apdu) -> tuple[Path, ElementaryFile]:
    sfi = cmd.p2 >> 3
    if sfi == 0x1F:
        raise CardError(sw.WRONG_P1P2)
    path, spec = _ef(card, sfi or None)
    if not spec.RECORDS:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "not a record file")
    return path, spec


def _locate(card, records: tuple[bytes, ...], p1: int, mode: int) -> int:
    """Index of the record P1/P2 name: by number (P1 00 = current) or by identifier (its first byte)."""
    current = card.session.record
    if mode == BY_NUMBER:
        n = p1 or current
        if n is None or not 1 <= n <= len(records):
            raise CardError(sw.RECORD_NOT_FOUND)
        return n - 1
    if mode > BY_ID_PREVIOUS or p1 in (0x00, 0xFF):
        raise CardError(sw.WRONG_P1P2)
    hits = [i for i, r in enumerate(records) if r[:1] == bytes([p1])]
    if mode == BY_ID_NEXT and current is not None:
        hits = [i for i in hits if i > current - 1]
    elif mode == BY_ID_PREVIOUS:
        hits = [i for i in hits if current is None or i < current - 1][::-1]
    elif mode == BY_ID_LAST:
        hits = hits[::-1]
    if not hits:
        raise CardError(sw.RECORD_NOT_FOUND)
    return hits[0]


def read_record(card, cmd: Apdu) -> bytes:
    """READ RECORD: the whole record (tag and length included) by number or by identifier."""
    path, spec = _record_target(card, cmd)
    card.require(spec.read_right, "read")
    records = card.fs.body(path)
    p1 = cmd.p1
    if p1 and cmd.p2 & 0x07 == BY_NUMBER and p1 <= len(records):
        # The read terminals send: a record by its number, found without _locate's general walk.
        card.session.record = p1
        return records[p1 - 1]
    i = _locate(card, records, p1, cmd.p2 & 0x07)
    card.session.record = i + 1
    return records[i]


def _check_record(card, path: Path, spec: ElementaryFile, data: bytes, replacing: int | None) -> None:
    if isinstance(spec, LinearFixedEF):
        if len(data) != spec.rec_len:
            raise CardError(sw.WRONG_LENGTH, f"record must be {spec.rec_len} bytes, not {len(data)}")
        return
    if not is_simple_record(data):
        raise CardError(sw.WRONG_DATA, "a variable record is tag ‖ length ‖ value")
    records = card.fs.body(path)
    used = sum(len(r) for j, r in enumerate(records) if j != replacing)
    if used + len(data) > spec.size:
        raise CardError(sw.NOT_ENOUGH_MEMORY, f"record of {len(data)} bytes does not fit")


def update_record(card, cmd: Apdu) -> bytes:
    """UPDATE RECORD: replace one record, addressed as READ RECORD addresses it."""
    path, spec = _record_target(card, cmd)
    if isinstance(spec, CyclicEF):
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, "cyclic files take APPEND RECORD")
    if not cmd.lc_present:
        raise CardError(sw.WRONG_LENGTH, "no data")
    data = _writable(card, cmd, spec)
    records = card.fs.body(path)
    mode = cmd.p2 & 0x07
    i = _locate(card, records, cmd.p1, mode)
    if mode != BY_NUMBER and data[:1] != bytes([cmd.p1]):
        raise CardError(sw.WRONG_DATA, "new record does not carry the identifier it replaces")
    _check_record(card, path, spec, data, i)
    card.fs.set_body(path, records[:i] + (data,) + records[i + 1:])
    card.session.record = i + 1
    return b""


def append_record(card, cmd: Apdu) -> bytes:
    """APPEND RECORD: add a record at the end (a cyclic file: as record 1, dropping the oldest)."""
    if cmd.p1 != 0 or cmd.p2 & 0x07:
        raise CardError(sw.WRONG_P1P2)
    path, spec = _record_target(card, cmd)
    if not cmd.lc_present:
        raise CardError(sw.WRONG_LENGTH, "no data")
    data = _writable(card, cmd, spec)
    records = card.fs.body(path)
    if isinstance(spec, CyclicEF):
        _check_record(card, path, spec, data, None)
        card.fs.set_body(path, ((data,) + records)[: spec.count])
        card.session.record = 1
        return b""
    if isinstance(spec, LinearFixedEF) and len(records) >= spec.count:
        raise CardError(sw.NOT_ENOUGH_MEMORY, "all records exist")
    if not isinstance(spec, (LinearFixedEF, VariableRecordEF)):
        raise CardError(sw.CONDITIONS_NOT_SATISFIED)
    _check_record(card, path, spec, data, None)
    card.fs.set_body(path, records + (data,))
    card.session.record = len(records) + 1
    return b""
