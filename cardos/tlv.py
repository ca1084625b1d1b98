"""BER-TLV of ISO 7816-4 (tags of 1-2 bytes, lengths up to 82 xx xx) and SIMPLE-TLV records."""

from __future__ import annotations


class TlvError(ValueError):
    """Bytes that are not well-formed TLV; the message gives the offset."""


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    if n < 0x10000:
        return bytes([0x82]) + n.to_bytes(2, "big")
    raise TlvError(f"length {n} too large")


def tlv(tag: int, value: bytes) -> bytes:
    """Encode one BER-TLV object."""
    t = tag.to_bytes(2, "big") if tag > 0xFF else bytes([tag])
    return t + encode_length(len(value)) + value


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """Decode a run of BER-TLV objects; 00 and FF padding between objects is skipped."""
    out, i, n = [], 0, len(data)
    while i < n:
        if data[i] in (0x00, 0xFF):
            i += 1
            continue
        start = i
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= n:
                raise TlvError(f"tag truncated at offset {start}")
            tag = (tag << 8) | data[i]
            i += 1
        if i >= n:
            raise TlvError(f"length missing at offset {i}")
        length = data[i]
        i += 1
        if length & 0x80:
            count = length & 0x7F
            if count not in (1, 2) or i + count > n:
                raise TlvError(f"bad length form at offset {i - 1}")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > n:
            raise TlvError(f"value of tag {tag:X} at offset {start} runs past the end")
        out.append((tag, bytes(data[i : i + length])))
        i += length
    return out


def _tags(data: bytes, with_lengths: bool) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= len(data):
                raise TlvError(f"tag truncated at offset {i - 1}")
            tag = (tag << 8) | data[i]
            i += 1
        length = 0
        if with_lengths:
            if i >= len(data):
                raise TlvError(f"length of tag {tag:X} missing at offset {i}")
            length = data[i]
            i += 1
        out.append((tag, length))
    return out


def parse_dol(dol: bytes) -> list[tuple[int, int]]:
    """A data object list (EMV Book 3 §5.4): (tag, length) pairs, tags of one or two bytes."""
    return _tags(dol, with_lengths=True)


def parse_tag_list(tags: bytes) -> list[int]:
    """A tag list (EMV Book 3, e.g. 9F4A): tags alone, of one or two bytes."""
    return [t for t, _ in _tags(tags, with_lengths=False)]


def find(data: bytes, tag: int) -> bytes | None:
    """The value of the first object with that tag, searching constructed objects too."""
    for t, v in parse(data):
        if t == tag:
            return v
        if (t >> 8 if t > 0xFF else t) & 0x20:
            try:
                inner = find(v, tag)
            except TlvError:
                inner = None
            if inner is not None:
                return inner
    return None


def simple_record(tag: int, value: bytes) -> bytes:
    """A SIMPLE-TLV record: tag ‖ one length byte ‖ value."""
    if not 1 <= tag <= 0xFE or len(value) > 0xFF:
        raise TlvError(f"record tag {tag:02X} or length {len(value)} out of range")
    return bytes([tag, len(value)]) + value


def is_simple_record(rec: bytes) -> bool:
    """True when rec is exactly one SIMPLE-TLV object with a one-byte length."""
    return len(rec) >= 2 and rec[0] not in (0x00, 0xFF) and rec[1] == len(rec) - 2
