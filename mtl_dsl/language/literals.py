"""Literals as written to their values, with a diagnostic at the column of what is wrong.

The grammar lexes strings and numbers loosely and this module decides what they mean, so
that a bad escape, a control character, an integer beyond 64 bits or an overflowing float
is an error at its own column instead of an exception inside the parser (docs/language.md,
"Lexical rules"). It also states the nesting limit of the syntax tree: the transformer
and every later stage walk expressions recursively, so depth is bounded here, once.
"""

from __future__ import annotations

import math

from lark import Tree

from .diagnostics import Diagnostic, Span

# The escapes a string may contain, and what they stand for (\uXXXX is handled apart).
ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
# Integers must fit in 64 bits (every parameter is bounded far below; see the registry).
INT_LIMIT = 2 ** 63
# How deep the syntax tree of one statement may nest: lists in lists, calls in calls, and
# chained operators (a chain of N operators nests N deep).
MAX_DEPTH = 100


class LiteralError(ValueError):
    """A literal that has no value: `offset` is where in its text the problem starts."""

    def __init__(self, message: str, offset: int, width: int = 1, hint: str | None = None):
        super().__init__(message)
        self.message, self.offset, self.width, self.hint = message, offset, width, hint


def decode_string(text: str) -> str:
    """The value of a string literal including its quotes; raises LiteralError."""
    out: list[str] = []
    i, end = 1, len(text) - 1
    while i < end:
        ch = text[i]
        if ch == "\\":
            i = _escape(text, i, out)
            continue
        if ord(ch) < 0x20 or ch == "\x7f":
            raise LiteralError(f"control character {ch!r} inside a string", i,
                               hint="write a tab as \\t; strings hold printable text")
        out.append(ch)
        i += 1
    return "".join(out)


def _escape(text: str, i: int, out: list[str]) -> int:
    """Decode the escape starting at text[i] (a backslash); the index after it."""
    code = text[i + 1]
    if code in ESCAPES:
        out.append(ESCAPES[code])
        return i + 2
    if code == "u":
        digits = text[i + 2:i + 6]
        if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
            value = int(digits, 16)
            if 0xD800 <= value <= 0xDFFF:
                raise LiteralError(f"\\u{digits} is half of a surrogate pair, not a character",
                                   i, 6, "write the character itself (specs are UTF-8)")
            out.append(chr(value))
            return i + 6
        raise LiteralError("\\u needs four hexadecimal digits", i, 2, "e.g. \\u00e9")
    raise LiteralError(f"unknown escape \\{code} in a string", i, 2,
                       'the escapes are \\" \\\\ \\n \\t \\r and \\uXXXX')


def decode_number(text: str) -> int | float:
    """The value of a number literal; raises LiteralError when it does not fit."""
    if not any(c in text for c in ".eE"):
        digits = text.lstrip("+-").lstrip("0") or "0"
        value = int(digits) * (-1 if text.startswith("-") else 1) if len(digits) <= 19 else None
        if value is not None and -INT_LIMIT <= value < INT_LIMIT:
            return value
        raise LiteralError("integer out of range", 0, len(text),
                           f"integers are below 2^63 ({INT_LIMIT:,}) in magnitude")
    value = float(text)
    if not math.isfinite(value):
        raise LiteralError("number out of range", 0, len(text),
                           "numbers are finite: below about 1.8e308 in magnitude")
    return value


def literal_diagnostic(err: LiteralError, span: Span, what: str) -> Diagnostic:
    """A LiteralError as a diagnostic at its column (`span` is the literal's)."""
    column = span.column + err.offset
    where = Span(span.line, column, span.line, column + err.width)
    return Diagnostic("E110", f"bad {what}: {err.message}", where, err.hint)


def deepest(tree: Tree, limit: int = MAX_DEPTH) -> Tree | None:
    """The first lark subtree deeper than `limit` below `tree` (None when there is none),
    found without recursion so that any depth can be measured."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return node
        stack.extend((c, depth + 1) for c in reversed(node.children) if isinstance(c, Tree))
    return None
