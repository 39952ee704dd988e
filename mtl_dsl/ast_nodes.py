"""The syntax tree the parser builds: statements and call arguments, each with its span.

These nodes say only what was written. What a call's arguments *mean* (a width,
a reference to an expert group, a dropout rate) is decided by the block
registry when the IR is built, so the grammar stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .diagnostics import Span


@dataclass(frozen=True)
class Number:
    value: int | float
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Ref:
    """A (possibly dotted) name: a reference to a node, or a bare word like `relu`."""

    name: str
    span: Span


@dataclass(frozen=True)
class ListValue:
    items: tuple["Value", ...]
    span: Span


@dataclass(frozen=True)
class KwArg:
    key: str
    value: "Value"
    span: Span


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Value", ...]
    kwargs: tuple[KwArg, ...]
    span: Span
    name_span: Span


Value = Union[Number, String, Ref, ListValue, Call]


@dataclass(frozen=True)
class Statement:
    """One line of a spec. Fields a keyword does not use stay empty."""

    keyword: str
    span: Span
    name: str | None = None
    name_span: Span | None = None
    call: Call | None = None
    count: Number | None = None
    refs: tuple[Ref, ...] = ()
    kwargs: tuple[KwArg, ...] = ()
    text: str | None = None


def plain(value: Value):
    """The Python value of a literal, for parameter models (refs become their name)."""
    if isinstance(value, (Number, String)):
        return value.value
    if isinstance(value, Ref):
        return value.name
    if isinstance(value, ListValue):
        return [plain(v) for v in value.items]
    return value  # a nested Call is interpreted by whoever expects one
