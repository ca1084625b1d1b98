"""Declarative shapes of JSON documents, and a check that names the first place a document leaves its shape.

A shape is built from Obj, Variants, List, Int, Bool, Str, Pattern and Hex; check(shape, value)
raises ShapeError("entries[3].tries_left: …"). Integers are exact (a float, a bool or NaN is
never one); objects are closed (an unknown field is an error, as a flipped bit in a field name is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class ShapeError(ValueError):
    """A document that is not of its shape; the message starts with the place, as a JSON path."""


class Shape:
    """Something a JSON value can be checked against."""

    def check(self, value: Any, place: str) -> None:
        raise NotImplementedError


def check(shape: Shape, value: Any) -> None:
    """Raise ShapeError naming the first place where value is not of the shape."""
    shape.check(value, "")


def _fail(place: str, problem: str) -> None:
    raise ShapeError(f"{place or 'document'}: {problem}")


def _show(value: Any) -> str:
    # Name what was found without echoing it: values can be long, or secret.
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a text", list: "a list",
             dict: "an object", type(None): "null"}
    return kinds.get(type(value), "a number out of range" if isinstance(value, BadNumber) else "a value")


def _label(name: str) -> str:
    # A field name comes from the document: keep the message one short, printable line.
    shown = name if name.isprintable() else repr(name)
    return shown if len(shown) <= 40 else shown[:40] + "…"


class BadNumber:
    """A number JSON allows and no card field does (1e400, NaN, 5000 digits, a fraction): kept as text."""

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(frozen=True)
class Int(Shape):
    """An integer in lo..hi."""

    lo: int
    hi: int

    def check(self, value: Any, place: str) -> None:
        if type(value) is not int:
            _fail(place, f"must be a whole number {self.lo}..{self.hi}, not {_show(value)}")
        if not self.lo <= value <= self.hi:
            _fail(place, f"{value} is out of range {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Bool(Shape):
    """true or false (never the text "false")."""

    def check(self, value: Any, place: str) -> None:
        if type(value) is not bool:
            _fail(place, f"must be true or false, not {_show(value)}")


@dataclass(frozen=True)
class Str(Shape):
    """A text, optionally one of a few, at most max_len characters."""

    choices: tuple[str, ...] = ()
    max_len: int = 1000

    def check(self, value: Any, place: str) -> None:
        if type(value) is not str:
            _fail(place, f"must be a text, not {_show(value)}")
        if self.choices and value not in self.choices:
            _fail(place, f"must be one of {', '.join(self.choices)}")
        if len(value) > self.max_len:
            _fail(place, f"text of {len(value)} characters, at most {self.max_len}")


@dataclass(frozen=True)
class Pattern(Shape):
    """A text matching a regular expression; `what` says in words what it must be."""

    regex: str
    what: str

    def check(self, value: Any, place: str) -> None:
        if type(value) is not str or not re.fullmatch(self.regex, value):
            _fail(place, f"must be {self.what}")


_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")


@dataclass(frozen=True)
class Hex(Shape):
    """Bytes written as hex digits, lo..hi bytes long."""

    lo: int
    hi: int

    def check(self, value: Any, place: str) -> None:
        if type(value) is not str or not _HEX.fullmatch(value):
            _fail(place, "must be hex digits in pairs")
        n = len(value) // 2
        if not self.lo <= n <= self.hi:
            span = f"{self.lo}" if self.lo == self.hi else f"{self.lo}..{self.hi}"
            _fail(place, f"{n} bytes, must be {span}")


@dataclass(frozen=True)
class List(Shape):
    """A list of items of one shape, at most max_len of them."""

    item: Shape
    max_len: int

    def check(self, value: Any, place: str) -> None:
        if type(value) is not list:
            _fail(place, f"must be a list, not {_show(value)}")
        if len(value) > self.max_len:
            _fail(place, f"{len(value)} items, at most {self.max_len}")
        for i, v in enumerate(value):
            self.item.check(v, f"{place}[{i}]")


@dataclass(frozen=True)
class Obj(Shape):
    """An object with exactly these fields (those in `optional` may be absent)."""

    fields: dict[str, Shape]
    optional: frozenset[str] = field(default_factory=frozenset)

    def check(self, value: Any, place: str) -> None:
        if type(value) is not dict:
            _fail(place, f"must be an object, not {_show(value)}")
        prefix = f"{place}." if place else ""
        for name in value:
            if name not in self.fields:
                _fail(f"{prefix}{_label(name)}", "unknown field")
        for name, shape in self.fields.items():
            if name in value:
                shape.check(value[name], prefix + name)
            elif name not in self.optional:
                _fail(f"{prefix}{name}", "missing")


@dataclass(frozen=True)
class Variants(Shape):
    """An object that is one of several, told apart by which field (and, if given, which value) it has."""

    cases: tuple[tuple[str, Any, Obj], ...]  # (field, required value or None, shape)

    def check(self, value: Any, place: str) -> None:
        if type(value) is not dict:
            _fail(place, f"must be an object, not {_show(value)}")
        for name, wanted, shape in self.cases:
            if name in value and (wanted is None or value[name] == wanted):
                shape.check(value, place)
                return
        names = sorted({name for name, _, _ in self.cases})
        _fail(place, f"must have one of the fields {', '.join(names)} (with a known value)")
