"""The front end for a text being edited: `check_text`'s results, re-using what the previous
text had in common with this one.

A spec is cut into *parts*, runs of whole lines that hold whole statements (a call wrapped
over lines stays in one part; blank and comment lines belong to none). Each part is parsed on
its own by `parser.parse_part`, at its own line numbers and in the parser state the whole
spec's parse is in there, so its statements, spans and syntax diagnostics are the whole
parse's; a part seen before is not parsed again (one moved by inserted lines has its spans
moved). Each statement's reading into the IR is kept too (`builder.build`'s memo). The graph,
validation and the size then run on the whole spec, in time linear in its size. An edit in a
100 KB spec thus re-parses and re-reads one statement (docs/internals.md, "The analysis core";
docs/benchmarks.md has the figures). `tests/test_analysis.py` holds the results equal to
`check_text`'s on every shipped spec, every golden bad spec and their mutants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache

from . import registry as reg
from .builder import Read, build
from .check import Checked, check_spec, check_text
from .diagnostics import Diagnostic, MtlError, Source, Span, normalise_newlines
from .overrides import apply
from .parser import parse_part
from .space import find_space
from .syntax import Statement
from .validation import ColumnLookup

# What moves a part's depth: a bracket, outside strings (one line each, as the grammar's
# STRING) and comments. An unclosed string runs to the line's end: the lexer fails there.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|#.*|[()\[\]]')
_BLANK = re.compile(r"[ \t]*(#.*)?")
_SPACE = re.compile(r"[ \t]*")
_STATEMENT = re.compile(r"(model|data|feature|label|input|experts|gate|tower|task|transfer|"
                        r"extract|weighting|train)\b")


@dataclass(frozen=True)
class Part:
    """Lines `line`.. of a spec holding whole statements, and the line break after them."""

    line: int
    text: str


def split(text: str) -> list[Part]:
    """The parts of a normalised text ending with a newline, as the parser's post-lexer sees
    statements end: at a line end outside brackets (its depth never below zero). A part also
    holds what the line break token after it spans (blank lines, the next line's indentation),
    so that a syntax error there shows the same token."""
    lines = text.split("\n")[:-1]
    found: list[Part] = []
    start, depth = None, 0
    for number, row in enumerate(lines, start=1):
        if start is None and _BLANK.fullmatch(row):
            continue
        if start is None:
            start = number
        for token in _TOKENS.findall(row):
            if token in "([":
                depth += 1
            elif token in ")]":
                depth = max(0, depth - 1)
        if depth == 0:
            found.append(Part(start, _with_break(lines, start, number)))
            start = None
    if start is not None:
        found.append(Part(start, _with_break(lines, start, len(lines))))
    return found


def _with_break(lines: list[str], start: int, end: int) -> str:
    """Lines start..end (1-based) and the line break token after them."""
    after = end
    while after < len(lines) and _SPACE.fullmatch(lines[after]):
        after += 1
    indent = _SPACE.match(lines[after]).group() if after < len(lines) else ""
    return "\n".join(lines[start - 1:after]) + "\n" + indent


@dataclass(frozen=True)
class Front:
    """What one check found: `checked` (None when the spec does not parse), the diagnostics
    exactly as `check_text` reports them (syntax errors included), and the statements read
    (on a syntax error, those of the parts before and after it that parse)."""

    checked: Checked | None
    diagnostics: list[Diagnostic]
    statements: list[Statement]


class Incremental:
    """Keeps the parsed parts and read statements of the last text checked; not thread-safe
    (one per document, used by one thread at a time)."""

    def __init__(self) -> None:
        self._parts: dict[tuple[tuple[bool, int], int, str], tuple[list[Statement], list[Diagnostic]]] = {}
        self._moved: dict[tuple[tuple[bool, int], str], tuple[int, list[Statement], list[Diagnostic]]] = {}
        self._read: dict[Statement, Read] = {}

    def check(self, text: str, name: str = "<spec>", path: str | None = None,
              columns: ColumnLookup | None = None, max_params: int = reg.MAX_PARAMS) -> Front:
        """check_text(text, name, path, columns=columns, max_params=max_params), as a Front."""
        source = Source(text, name)
        statements, failure = self._parse(source)
        if failure is not None:
            return Front(None, failure, statements)
        space, problems = find_space(statements, text)
        if problems:
            return Front(None, problems, statements)
        if space:  # every candidate is checked by the one front end (language/space.py)
            checked = check_text(text, name, path, columns=columns, max_params=max_params)
            return Front(checked, checked.diagnostics, statements)
        memo, self._read = self._read, {}
        for st in statements:
            if st in memo:
                self._read[st] = memo[st]
        spec, built = build(statements, text, path, self._read)
        checked = check_spec(apply(spec), source, columns, built, max_params)
        return Front(checked, checked.diagnostics, statements)

    def _parse(self, source: Source) -> tuple[list[Statement], list[Diagnostic] | None]:
        """The statements, and the diagnostics `parser.parse` would raise (None: it would
        not): the first syntax error, else the first statement too deep, else every bad
        literal."""
        text = normalise_newlines(source.text)
        parts, moved = self._parts, self._moved
        self._parts, self._moved = {}, {}
        statements, problems, syntax, deep = [], [], None, None
        found_parts = split(text if text.endswith("\n") else text + "\n")
        lead = bool(found_parts) and found_parts[0].line > 1
        for n, part in enumerate(found_parts):
            try:
                found = self._part(part, (lead, min(n, 2)), source, parts, moved)
            except MtlError as err:
                d = err.diagnostics[0]
                if d.code != "E109" and syntax is None:
                    syntax = d
                deep = deep or (d if d.code == "E109" else None)
                statements += _recovered(part, source)
                continue
            statements += found[0]
            problems += found[1]
        failure = [syntax] if syntax else [deep] if deep else problems or None
        return statements, failure

    def _part(self, part: Part, after: tuple[bool, int], source: Source, parts: dict, moved: dict
              ) -> tuple[list[Statement], list[Diagnostic]]:
        """A part's statements and problems: parsed before at these lines, or at others
        (moved), or parsed now."""
        key = (after, part.line, part.text)
        found = parts.get(key)
        if found is None and (after, part.text) in moved:
            line, statements, problems = moved[(after, part.text)]
            found = _moved(statements, part.line - line), _moved(problems, part.line - line)
        if found is None:
            found = parse_part(part.text, part.line, *after, source)
        self._parts[key] = found
        self._moved[(after, part.text)] = (part.line, *found)
        return found


def _recovered(part: Part, source: Source) -> list[Statement]:
    """The statements of a part that does not parse, where its lines that start with a
    statement keyword parse on their own: a bracket left open while typing swallows the rest
    of the spec, yet the statements below still have names (the symbol index only; the
    diagnostics stay the whole parse's)."""
    rows = part.text.split("\n")
    starts = [i for i, row in enumerate(rows) if i and _STATEMENT.match(row)]
    found: list[Statement] = []
    for a, b in zip([0, *starts], [*starts, len(rows)]):
        try:
            found += parse_part("\n".join(rows[a:b]) + "\n", part.line + a, False, 2, source)[0]
        except MtlError:
            continue
    return found


def _moved(nodes, lines: int):
    """Syntax nodes (or diagnostics) with every span `lines` further down."""
    if not lines:
        return nodes
    return [_shift(node, lines) for node in nodes]


def _shift(node, lines: int):
    if isinstance(node, Span):
        return Span(node.line + lines, node.column, node.end_line + lines, node.end_column)
    if isinstance(node, tuple):
        return tuple(_shift(item, lines) for item in node)
    if is_dataclass(node) and not isinstance(node, type):
        return type(node)(*(_shift(getattr(node, f), lines) for f in _fields(type(node))))
    return node


@lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))
