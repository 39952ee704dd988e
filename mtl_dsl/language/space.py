"""Search spaces written where values go: `dim=choice(4, 8)`, `lr=loguniform(1e-4, 1e-2)`.

A space is a plain description (no optimiser is imported here): each *dimension* is one
`choice`, `uniform`, `loguniform` or `int_uniform` call with where it sits and its span.
`substitute` writes chosen values into the spec text, so every trial, and `best.mtl`, is an
ordinary spec that goes through the one front end. Candidates are validated by substituting
each in turn (the others at their first candidate) with columns kept, so a diagnostic lands
on the candidate itself (docs/tuning.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

from .diagnostics import Diagnostic, Span, lines_of
from .syntax import Call, ListValue, Number, Ref, Statement, Value

# The distributions; a call by one of these names anywhere a value goes is a dimension.
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int_uniform")
Chosen = dict[str, "str | int | float"]  # dimension name -> option text or number


@dataclass(frozen=True)
class Place:
    """Where one space is written: its statement and the path inside it, as the dimension's
    default name spells it (`experts e` + `[count]`, `: mlp(#2)`, `: mlp(dropout)`; `train`
    + ` lr`; `weighting` + `` for a whole kind). The diagram shows the space there
    (tools/drawing/searched.py)."""

    keyword: str
    name: str | None
    path: str

    @property
    def where(self) -> str:
        return f"{self.keyword} {self.name}{self.path}" if self.name else \
            f"{self.keyword}{self.path}"


@dataclass(frozen=True)
class Dimension:
    """One searched value: `options` (the texts as written) for a choice, else `low`/`high`.
    `spans` are the places it is written (several when `name=` ties them together), `places`
    what each of them sits in."""

    name: str
    kind: str
    spans: tuple[Span, ...]
    options: tuple[str, ...] = ()
    option_spans: tuple[Span, ...] = ()
    low: float = 0.0
    high: float = 0.0
    places: tuple[Place, ...] = ()

    def candidates(self) -> list[tuple[str, Span]]:
        """What validation tries: every option, or both bounds (as text, with its span)."""
        if self.kind == "choice":
            return list(zip(self.options, self.option_spans))
        return [(number_text(self.low), self.spans[0]), (number_text(self.high), self.spans[0])]

    def first(self) -> str | int | float:
        return self.options[0] if self.kind == "choice" else \
            (int(self.low) if self.kind == "int_uniform" else self.low)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {len(self.options)}: {', '.join(self.options)}"
        return f"{self.kind}({number_text(self.low)}, {number_text(self.high)})"


@dataclass(frozen=True)
class Space:
    dims: tuple[Dimension, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dims)

    def size(self) -> int | None:
        """How many specs the space holds; None when a dimension is continuous."""
        total = 1
        for d in self.dims:
            if d.kind in ("uniform", "loguniform"):
                return None
            total *= len(d.options) if d.kind == "choice" else int(d.high - d.low) + 1
        return total

    def describe(self) -> list[str]:
        """`mtl check`'s lines: the size, then each dimension with where it is written."""
        size = self.size()
        head = f"search space: {len(self.dims)} dimension{'s' * (len(self.dims) != 1)}, " \
               f"{'continuous' if size is None else f'{size:,} specs'} (search it with mtl tune)"
        return [head] + [f"  {d.spans[0]}  {d.name}: {d.describe()}" for d in self.dims]

    def first(self) -> Chosen:
        return {d.name: d.first() for d in self.dims}


def number_text(value: int | float) -> str:
    """A number as a spec literal, short: 6 significant digits for floats."""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def find_space(statements: list[Statement], text: str) -> tuple[Space, list[Diagnostic]]:
    """Every distribution call of a parsed spec (`text`: its source) as dimensions, and
    what is malformed."""
    found: list[tuple[str, Call, Place]] = []
    problems: list[Diagnostic] = []
    for stmt in statements:
        head = len(Place(stmt.keyword, stmt.name, "").where)
        for where, call in _calls(stmt):
            if call.name in DISTRIBUTIONS:
                found.append((where, call, Place(stmt.keyword, stmt.name, where[head:])))
            elif where.endswith("[count]"):
                problems.append(Diagnostic("E320", f"'{call.name}(...)' is not a count; a "
                                           "count is a number or a search space",
                                           call.span, "e.g. experts e[choice(4, 8)]"))
    dims: dict[str, Dimension] = {}
    for where, call, place in found:
        dim = _dimension(where, call, problems, text)
        if dim is None:
            continue
        dim = replace(dim, places=(place,))
        if dim.name in dims and not _same(dims[dim.name], dim):
            problems.append(Diagnostic("E320", f"'{dim.name}' names two different search "
                                       "spaces", call.span, "a shared name= ties spaces that "
                                       "are written the same way"))
        elif dim.name in dims:
            old = dims[dim.name]
            dims[dim.name] = replace(old, spans=old.spans + dim.spans,
                                     places=old.places + dim.places)
        else:
            dims[dim.name] = dim
    return Space(tuple(dims.values())), problems


def _same(a: Dimension, b: Dimension) -> bool:
    """Whether two spaces tied by one name= are written alike (else the name is ambiguous)."""
    return (a.kind, a.options, a.low, a.high) == (b.kind, b.options, b.low, b.high)


def _calls(stmt: Statement) -> Iterator[tuple[str, Call]]:
    """(where, call) of every call in a statement, outermost first; `where` names it."""
    head = f"{stmt.keyword} {stmt.name}" if stmt.name else stmt.keyword
    if isinstance(stmt.count, Call):
        yield f"{head}[count]", stmt.count
    if stmt.call is not None:
        if stmt.call.name in DISTRIBUTIONS:
            yield head, stmt.call
        else:
            yield from _walk(stmt.call, f"{head}: {stmt.call.name}")
    for kw in stmt.kwargs:
        yield from _value(kw.value, f"{head} {kw.key}")


def _walk(call: Call, where: str) -> Iterator[tuple[str, Call]]:
    """The calls among a call's arguments: `#N` for the Nth positional one, else its key."""
    for i, arg in enumerate(call.args):
        yield from _value(arg, f"{where}(#{i + 1})")
    for kw in call.kwargs:
        yield from _value(kw.value, f"{where}({kw.key})")


def _value(value: Value, where: str) -> Iterator[tuple[str, Call]]:
    """The calls in one value; a distribution's own arguments are its candidates, not walked."""
    if isinstance(value, Call):
        yield where, value
        if value.name not in DISTRIBUTIONS:
            yield from _walk(value, f"{where}.{value.name}")
    elif isinstance(value, ListValue):
        for i, item in enumerate(value.items):
            yield from _value(item, f"{where}[{i}]")


def _dimension(where: str, call: Call, problems: list[Diagnostic], text: str
               ) -> Dimension | None:
    """A distribution call read into a dimension; None (and a diagnostic) when malformed."""
    name, extra = where, [kw for kw in call.kwargs if kw.key != "name"]
    for kw in call.kwargs:
        if kw.key == "name" and isinstance(kw.value, Ref):
            name = kw.value.name
    if extra or len(call.kwargs) - len(extra) > 1 or name == where and call.kwargs:
        bad = (extra or list(call.kwargs))[0]
        problems.append(Diagnostic("E320", f"{call.name}() takes only values and name=NAME",
                                   bad.span, "name=NAME ties spaces into one dimension"))
        return None
    nested = [a for a in call.args if _has_space(a)]
    if nested:
        problems.append(Diagnostic("E322", f"a search space inside {call.name}()",
                                   nested[0].span, "write the candidates out in one space"))
        return None
    if call.name == "choice":
        return _choice(name, call, problems, text)
    return _range(name, call, problems)


def _has_space(value: Value) -> bool:
    """Whether a candidate holds a space itself (nested spaces are refused: E322)."""
    if isinstance(value, Call):
        return value.name in DISTRIBUTIONS or any(_has_space(a) for a in value.args) or \
            any(_has_space(k.value) for k in value.kwargs)
    return isinstance(value, ListValue) and any(_has_space(v) for v in value.items)


def _choice(name: str, call: Call, problems: list[Diagnostic], text: str
            ) -> Dimension | None:
    if not call.args:
        problems.append(Diagnostic("E320", "choice() needs at least one candidate", call.span,
                                   "e.g. choice(4, 8, 16)"))
        return None
    texts = tuple(_text_of(a, text) for a in call.args)
    if len(set(texts)) < len(texts):
        problems.append(Diagnostic("E320", "choice() lists a candidate twice", call.span))
        return None
    return Dimension(name, "choice", (call.span,), texts, tuple(a.span for a in call.args))


def _range(name: str, call: Call, problems: list[Diagnostic]) -> Dimension | None:
    kind = call.name
    if len(call.args) != 2 or not all(isinstance(a, Number) for a in call.args):
        problems.append(Diagnostic("E320", f"{kind}() takes two numbers, low and high",
                                   call.span, f"e.g. {kind}(1e-4, 1e-2)"))
        return None
    low, high = (a.value for a in call.args)
    if kind == "int_uniform" and not all(isinstance(v, int) for v in (low, high)):
        problems.append(Diagnostic("E320", "int_uniform() takes two integers", call.span))
        return None
    if low >= high:
        problems.append(Diagnostic("E321", f"{kind}({low}, {high}): low must be below high",
                                   call.span, "write the smaller bound first"))
        return None
    if kind == "loguniform" and low <= 0:
        problems.append(Diagnostic("E321", f"loguniform({low}, {high}): bounds must be "
                                   "positive", call.args[0].span, "use uniform() from zero"))
        return None
    return Dimension(name, kind, (call.span,), low=low, high=high)


def _text_of(value: Value, text: str) -> str:
    """A candidate as text: numbers and names print as themselves, the rest as written."""
    if isinstance(value, Number):
        return number_text(value.value)
    if isinstance(value, Ref):
        return value.name
    return _slice(text, value.span)


def _offsets(text: str) -> list[int]:
    """Where each line starts in the text with normalised newlines (spans are line/column)."""
    starts, pos = [], 0
    for line in lines_of(text):
        starts.append(pos)
        pos += len(line) + 1
    return starts


def _range_of(text: str, span: Span, starts: list[int] | None = None) -> tuple[int, int]:
    starts = starts or _offsets(text)
    return starts[span.line - 1] + span.column - 1, starts[span.end_line - 1] + span.end_column - 1


def _slice(text: str, span: Span) -> str:
    a, b = _range_of(text, span)
    return "\n".join(lines_of(text))[a:b]


def substitute(text: str, space: Space, chosen: Chosen, pad: bool = False) -> str:
    """The spec text with each dimension's chosen value written in. `pad` keeps every
    column where it was (the value then blanks), so diagnostics of the result point into
    the original text."""
    text = "\n".join(lines_of(text))
    starts = _offsets(text)
    edits = []
    for d in space.dims:
        value = chosen[d.name]
        literal = value if isinstance(value, str) else number_text(value)
        edits += [(*_range_of(text, s, starts), literal) for s in d.spans]
    for a, b, literal in sorted(edits, reverse=True):
        region = text[a:b]
        if pad:
            blank = "".join("\n" if c == "\n" else " " for c in region[len(literal):])
            literal = literal + blank
        text = text[:a] + literal + text[b:]
    return text


def validate_space(text: str, space: Space,
                   check: Callable[[str], list[Diagnostic]]) -> list[Diagnostic]:
    """Every candidate of every dimension checked in a spec (the others at their first):
    an error inside a dimension is moved onto the candidate that caused it."""
    found: dict[tuple, Diagnostic] = {}
    base = space.first()
    for d in space.dims:
        for candidate, span in d.candidates():
            chosen = {**base, d.name: candidate}
            for diag in check(substitute(text, space, chosen, pad=True)):
                diag = _onto(diag, d, candidate, span)
                found.setdefault((diag.code, diag.message, diag.span), diag)
    return list(found.values())


def _onto(diag: Diagnostic, d: Dimension, candidate: str, span: Span) -> Diagnostic:
    at = diag.span
    inside = at is not None and any(  # the diagnostic's span overlaps where d is written
        (s.line, s.column) < (at.end_line, at.end_column) and
        (at.line, at.column) < (s.end_line, s.end_column) for s in d.spans)
    if not inside:
        return diag
    return Diagnostic(diag.code, f"{diag.message} (candidate {candidate} of {d.name})",
                      span, diag.hint, diag.severity)


