"""The EMV data an application holds in its record files, and data object lists (EMV Book 3 §5.4).

The card keeps its own parameters (AIP, AFL, log format, offline limits) in the same BER-TLV
templates terminals read, in a record file they cannot read [ours: SFI 1B, read never].
"""

from __future__ import annotations

from cardos import sw
from cardos.files import ElementaryFile
from cardos.sw import CardError
from cardos.tlv import TlvError, find, parse_dol

PARAMETERS_SFI = 0x1B


def template(record: bytes) -> bytes:
    """The value of an EMV record template 70 stored as a SIMPLE-TLV record (one length byte)."""
    if len(record) >= 2 and record[0] == 0x70 and record[1] == len(record) - 2:
        return record[2:]
    return b""


def data_object(card, df, tag: int) -> bytes | None:
    """The value of tag in the application's record templates (its parameters included)."""
    for _fid, path in sorted(card.fs.children(df).items()):
        spec = card.fs.spec(path)
        if not isinstance(spec, ElementaryFile) or not spec.RECORDS:
            continue
        for rec in card.fs.body(path):
            try:
                value = find(template(rec), tag)
            except TlvError:
                continue
            if value is not None:
                return value
    return None


def required(card, df, tag: int) -> bytes:
    """A data object the application cannot work without: 6985 when the card lacks it."""
    value = data_object(card, df, tag)
    if value is None:
        raise CardError(sw.CONDITIONS_NOT_SATISFIED, f"the application has no {tag:X}")
    return value


def split_dol(dol: bytes, data: bytes) -> dict[int, bytes]:
    """The values a terminal sent in the order and lengths of a DOL; 6700 when the length differs."""
    fields = parse_dol(dol)
    if sum(n for _, n in fields) != len(data):
        raise CardError(sw.WRONG_LENGTH, f"DOL data must be {sum(n for _, n in fields)} bytes, not {len(data)}")
    out, i = {}, 0
    for tag, n in fields:
        out[tag] = data[i : i + n]
        i += n
    return out


def pin_block_digits(block: bytes) -> str:
    """Digits of an EMV plaintext PIN block (ISO 9564 format 2): 2N ‖ N BCD digits ‖ F padding, 8 bytes."""
    if len(block) != 8 or block[0] >> 4 != 2 or not 4 <= (block[0] & 0x0F) <= 12:
        raise CardError(sw.WRONG_DATA, "not an EMV plaintext PIN block")
    n = block[0] & 0x0F
    text = block[1:].hex().upper()
    digits, pad = text[:n], text[n:]
    if not digits.isdigit() or set(pad) - {"F"}:
        raise CardError(sw.WRONG_DATA, "not an EMV plaintext PIN block")
    return digits
