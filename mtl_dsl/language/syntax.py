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
class BinOp:
    """`+ - *` over task probabilities, or `& |` over label columns."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Compare:
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


Expr = Union[Number, String, Ref, BinOp, Not, Compare]


def refs_in(expr: Expr) -> list[Ref]:
    """The names an expression reads, in order of appearance."""
    if isinstance(expr, Ref):
        return [expr]
    if isinstance(expr, (BinOp, Compare)):
        return refs_in(expr.left) + refs_in(expr.right)
    if isinstance(expr, Not):
        return refs_in(expr.operand)
    return []


_PRECEDENCE = {"|": 1, "&": 2, "+": 3, "-": 3, "*": 4}


def show(expr: Expr, parent: int = 0) -> str:
    """An expression as text, with only the parentheses it needs."""
    if isinstance(expr, Ref):
        return expr.name
    if isinstance(expr, Number):
        return repr(expr.value)
    if isinstance(expr, String):
        return '"' + expr.value.replace('"', '\\"') + '"'
    if isinstance(expr, Not):
        return "!" + show(expr.operand, 9)
    if isinstance(expr, Compare):
        text = f"{show(expr.left, 9)} {expr.op} {show(expr.right, 9)}"
        return f"({text})" if parent > 5 else text
    prec = _PRECEDENCE[expr.op]
    right = prec + (expr.op == "-")  # a - (b - c) keeps its parentheses
    text = f"{show(expr.left, prec)} {expr.op} {show(expr.right, right)}"
    return f"({text})" if prec < parent else text


@dataclass(frozen=True)
class Statement:
    """One line of a spec. Fields a keyword does not use stay empty."""

    keyword: str
    span: Span
    name: str | None = None
    name_span: Span | None = None
    call: Call | None = None
    count: Number | Call | None = None  # a Call only for a search space (language/space.py)
    refs: tuple[Ref, ...] = ()
    kwargs: tuple[KwArg, ...] = ()
    text: str | None = None
    expr: Expr | None = None


def plain(value: Value):
    """The Python value of a literal, for parameter models (refs become their name)."""
    if isinstance(value, (Number, String)):
        return value.value
    if isinstance(value, Ref):
        return value.name
    if isinstance(value, ListValue):
        return [plain(v) for v in value.items]
    return value  # a nested Call is interpreted by whoever expects one
