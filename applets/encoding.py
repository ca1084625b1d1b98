"""Data-item encodings of the social security card (spec §2) and the checks on their values."""

from __future__ import annotations

import re

FORMATS = ("b", "cn", "an", "gbk", "n")


class ItemError(ValueError):
    """A value that cannot be stored in its data item; the message says which rule it breaks."""


def encode(fmt: str, length: int, value: str | bytes) -> bytes:
    """Encode a value into exactly `length` bytes of a data item's format."""
    if fmt == "b":
        raw = value if isinstance(value, bytes) else _hex(value)
        if len(raw) != length:
            raise ItemError(f"binary item needs {length} bytes, got {len(raw)}")
        return raw
    text = value.decode() if isinstance(value, bytes) else str(value)
    if fmt == "cn":
        # Compressed numeric: BCD, left-aligned, padded right with F.
        if not re.fullmatch(r"[0-9]*", text):
            raise ItemError(f"{text!r} is not digits")
        if len(text) > 2 * length:
            raise ItemError(f"{len(text)} digits do not fit {length} bytes")
        return bytes.fromhex(text.ljust(2 * length, "F"))
    if fmt == "n":
        # Numeric: BCD right-aligned, padded left with 0.
        if not re.fullmatch(r"[0-9]*", text) or len(text) > 2 * length:
            raise ItemError(f"{text!r} does not fit {length} bytes of numeric")
        return bytes.fromhex(text.rjust(2 * length, "0"))
    if fmt == "an":
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            # Chinese text in an 'an' item is stored as GBK (data-items.md).
            raw = _gbk(text)
        return _pad(raw, length, text)
    if fmt == "gbk":
        return _pad(_gbk(text), length, text)
    raise ItemError(f"unknown format {fmt!r}")


def decode(fmt: str, raw: bytes) -> str:
    """The text form of an item's bytes (padding removed)."""
    if fmt == "b":
        return raw.hex().upper()
    if fmt == "cn":
        return raw.hex().upper().rstrip("F")
    if fmt == "n":
        return raw.hex().lstrip("0") or "0"
    text = raw.rstrip(b"\x00").rstrip(b" ")
    try:
        return text.decode("ascii") if fmt == "an" and text.isascii() else text.decode("gbk")
    except UnicodeDecodeError:
        return text.hex().upper()


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text.replace(" ", ""))
    except ValueError:
        raise ItemError(f"{text!r} is not hex") from None


def _gbk(text: str) -> bytes:
    try:
        return text.encode("gbk")
    except UnicodeEncodeError as e:
        raise ItemError(f"character {text[e.start]!r} is not in GBK") from None


def _pad(raw: bytes, length: int, text: str) -> bytes:
    if len(raw) > length:
        raise ItemError(f"{text!r} takes {len(raw)} bytes, the item holds {length}")
    return raw + bytes(length - len(raw))


def split_name(name: str, first: int = 30, extension: int = 20) -> tuple[bytes, bytes]:
    """Split a name into item 09 and its extension 4E on a character boundary (GBK bytes)."""
    raw = _gbk(name.strip())
    if not raw:
        raise ItemError("name is empty")
    if len(raw) > first + extension:
        raise ItemError(f"name takes {len(raw)} GBK bytes, at most {first + extension} fit")
    head = b""
    for ch in name.strip():
        enc = ch.encode("gbk")
        if len(head) + len(enc) > first:
            break
        head += enc
    tail = raw[len(head):]
    if len(tail) > extension:
        raise ItemError(f"name takes {len(raw)} GBK bytes and does not split into {first} + {extension}")
    return head, tail


# ---- checks on values ---------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """GB 11643 check character of an 18-character citizen ID."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def check_citizen_id(text: str) -> str | None:
    """None when text is a well-formed 18-character citizen ID, else the reason."""
    if not re.fullmatch(r"[0-9]{17}[0-9X]", text):
        return "must be 17 digits and a digit or X"
    if id_check_digit(text[:17]) != text[17]:
        return f"check character should be {id_check_digit(text[:17])}"
    return None


_CARD_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def card_number_check(first8: str) -> int:
    """Check value of a card number (data-items.md): 11 − (Σ wᵢ·vᵢ mod 11); A=10 … Z=35."""
    values = [ord(c) - ord("A") + 10 if c.isalpha() else int(c) for c in first8]
    return 11 - (sum(w * v for w, v in zip(_CARD_WEIGHTS, values)) % 11)


def check_card_number(text: str, checked: bool = True) -> str | None:
    """None when text is a capital letter, 7 digits and a valid check character, else the reason."""
    if not re.fullmatch(r"[A-Z][0-9]{8}", text):
        return "must be one capital letter and 8 digits"
    if checked:
        expect = card_number_check(text[:8])
        if expect >= 10:
            return "its first 8 characters give check value 10 or 11, which has no digit"
        if int(text[8]) != expect:
            return f"check character should be {expect}"
    return None


def luhn_digit(body: str) -> str:
    """The ISO/IEC 7812-1 (Luhn) check digit that completes a PAN whose other digits are body."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def check_pan(text: str) -> str | None:
    """Why a PAN is not a valid payment card number (12..19 digits, Luhn check digit), or None."""
    if not re.fullmatch(r"[0-9]{12,19}", text):
        return "must be 12..19 digits"
    if luhn_digit(text[:-1]) != text[-1]:
        return f"Luhn check digit should be {luhn_digit(text[:-1])}, not {text[-1]}"
    return None
