"""Source spans and diagnostics: every user-facing error of mtl-dsl goes through here.

One error class (:class:`MtlError`) carries a list of :class:`Diagnostic`s so that
the parser, the validator and the data loader can all report *everything* they
found at once, each pointing at a line of the spec with a caret and a hint.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal

Severity = Literal["error", "warning"]

# Codes about the spec's data source (validate.check_data): what `--data` replaces, and what a
# checkpoint no longer needs (its data may be gone). Every other code is about the spec itself.
DATA_CODES = frozenset({"E501", "E502", "E503", "E504", "E505", "E506", "E507"})


def normalise_newlines(text: str) -> str:
    """A line ends at \\n, \\r\\n or a lone \\r, as editors count them, and nowhere else
    (not at a form feed or U+2028, which str.splitlines would split at). The parser reads
    this text, so lark's line numbers, spans and Source.line all agree."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def lines_of(text: str) -> list[str]:
    """The lines of a spec by the one rule of normalise_newlines."""
    return normalise_newlines(text).split("\n")


@dataclass(frozen=True)
class Span:
    """Where a node came from: 1-based line and column, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def from_meta(cls, meta) -> "Span":
        """Build a span from a lark ``Meta`` or ``Token`` (both carry positions)."""
        return cls(meta.line, meta.column, meta.end_line, meta.end_column)

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True)
class Replacement:
    """A fix a diagnostic carries: `text` written over `span` (an editor's quick fix)."""

    span: Span
    text: str


@dataclass(frozen=True)
class Diagnostic:
    """One finding: a stable code, a message, where, and how to fix it. `fix` is the hint's
    suggestion as an edit, where the hint names one ("did you mean ..."); it is not part of
    what the diagnostic says, so diagnostics compare without it."""

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: Severity = "error"
    fix: Replacement | None = field(default=None, compare=False)

    @property
    def is_data(self) -> bool:
        """Whether this is about the data source rather than the spec (see DATA_CODES)."""
        return self.code in DATA_CODES

    def as_dict(self, file: str) -> dict:
        out = {"code": self.code, "severity": self.severity, "message": self.message,
               "file": file, "hint": self.hint}
        if self.span is not None:
            out.update(line=self.span.line, column=self.span.column)
        return out


@dataclass
class Source:
    """The text of a spec and the name to show for it in messages."""

    text: str
    name: str = "<spec>"
    _lines: list[str] = field(default_factory=list, init=False, repr=False)

    def line(self, number: int) -> str:
        if not self._lines:
            self._lines = lines_of(self.text)
        if 1 <= number <= len(self._lines):
            return self._lines[number - 1]
        return ""

    def where(self, span: Span | None) -> str:
        return f"{self.name}:{span.line}:{span.column}" if span else self.name


class MtlError(Exception):
    """Raised with every diagnostic a stage found; the CLI prints them and exits 1."""

    def __init__(self, diagnostics: Iterable[Diagnostic], source: Source | None = None):
        self.diagnostics = list(diagnostics)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return render_all(self.diagnostics, self.source)


class DataError(MtlError):
    """Bad data (missing column, NaN, label outside its domain): same reporting, exit 1."""

    def __init__(self, message: str, hint: str | None = None, code: str = "E701"):
        super().__init__([Diagnostic(code, message, hint=hint)])


ROWS_HINT = "rows are counted from 1, not counting a header line"  # every message naming a row


def render(diag: Diagnostic, source: Source | None) -> str:
    """Format a diagnostic rustc-style, with the source line and a caret under the span."""
    where = source.where(diag.span) if source else (str(diag.span) if diag.span else "")
    head = f"{where}: {diag.severity}[{diag.code}]: {diag.message}" if where else \
        f"{diag.severity}[{diag.code}]: {diag.message}"
    lines = [head]
    if source is not None and diag.span is not None:
        text = source.line(diag.span.line)
        gutter = str(diag.span.line)
        pad = " " * len(gutter)
        if diag.span.end_line == diag.span.line:
            width = max(1, diag.span.end_column - diag.span.column)
        else:
            width = max(1, len(text) - diag.span.column + 1)
        text, column, width = _window(text, diag.span.column, width)
        indent = "".join("\t" if ch == "\t" else " " for ch in text[:column - 1])
        lines += [f"{pad} |", f"{gutter} | {_printable(text)}", f"{pad} | {indent}{'^' * width}"]
        if diag.hint:
            lines.append(f"{pad} = help: {diag.hint}")
    elif diag.hint:
        lines.append(f"  = help: {diag.hint}")
    return "\n".join(lines)


SHOWN = 100  # the most characters of a source line shown under a diagnostic


def _window(text: str, column: int, width: int) -> tuple[str, int, int]:
    """A long line cut to SHOWN characters around the column (marked with '…' where cut),
    with the column and caret width moved into the cut."""
    if len(text) <= SHOWN:
        return text, column, width
    start = max(0, min(column - 1 - SHOWN // 4, len(text) - SHOWN))
    cut = ("…" if start else "") + text[start:start + SHOWN] + ("…" if start + SHOWN < len(text)
                                                                else "")
    column = column - start + (1 if start else 0)
    return cut, column, max(1, min(width, len(cut) - column + 1))


def _printable(line: str) -> str:
    """A source line as shown: control characters (a NUL, an escape sequence that would
    drive the terminal, a line separator) become U+FFFD, one character each so the caret stays aligned."""
    return "".join("\ufffd" if (ord(ch) < 0x20 and ch != "\t") or 0x7f <= ord(ch) < 0xa0
                   or ch in "\u2028\u2029" else ch for ch in line)


def render_all(diagnostics: Iterable[Diagnostic], source: Source | None) -> str:
    return "\n\n".join(render(d, source) for d in diagnostics)


def as_json(diagnostics: Iterable[Diagnostic], source: Source) -> str:
    return json.dumps([d.as_dict(source.name) for d in diagnostics], indent=2)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint from the same list of names that validation checks against."""
    return suggest(name, candidates)[0]


def suggest(name: str, candidates: Iterable[str], span: Span | None = None
            ) -> tuple[str | None, Replacement | None]:
    """The 'did you mean' hint for `name`, and the fix that writes the suggestion over `span`
    (where `name` is written), each None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    if not close:
        return None, None
    return f"did you mean '{close[0]}'?", Replacement(span, close[0]) if span else None


SHOWN_PER_CODE = {"warning": 5, "error": 50}  # the most diagnostics of one code shown apart
# What a summary calls the diagnostics of a code ("20,000 unused features; first 5: ...").
SUMMARY_NOUNS = {"W001": "unused labels", "W002": "unused features",
                 "W003": "expert groups or gates that feed no task"}


def summarise(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Diagnostics in order, with the many of one code folded: more than SHOWN_PER_CODE
    warnings of a code become one summary, errors beyond it one "N more" line. A 1 MB spec
    of unused features says so in a line, not in megabytes."""
    by_code: dict[str, list[Diagnostic]] = {}
    for d in diagnostics:
        by_code.setdefault(d.code, []).append(d)
    folded = {code: ds for code, ds in by_code.items() if len(ds) > SHOWN_PER_CODE[ds[0].severity]}
    if not folded:
        return diagnostics
    out, seen = [], dict.fromkeys(folded, 0)
    for d in diagnostics:
        group = folded.get(d.code)
        if group is None:
            out.append(d)
            continue
        seen[d.code] += 1
        shown = SHOWN_PER_CODE[d.severity]
        if d.severity == "warning" and seen[d.code] == 1:
            out.append(_summary(group, shown))
        elif d.severity == "error" and seen[d.code] <= shown:
            out.append(d)
        elif d.severity == "error" and seen[d.code] == shown + 1:
            out.append(Diagnostic(d.code, f"{len(group) - shown:,} more errors {d.code} like the "
                                  f"{shown} above", d.span, f"the next: {d.message}"))
    return out


def _summary(group: list[Diagnostic], shown: int) -> Diagnostic:
    """One diagnostic standing for a group of the same code."""
    first = group[0]
    noun = SUMMARY_NOUNS.get(first.code, f"{first.severity}s {first.code}")
    where = ", ".join(f"line {d.span.line}" for d in group[:shown] if d.span) or "-"
    names = [m.group(1) for d in group[:shown] if (m := re.search(r"'([^']*)'", d.message))]
    listed = ", ".join(names) if len(names) == min(shown, len(group)) else where
    return Diagnostic(first.code, f"{len(group):,} {noun}; first {shown}: {listed}", first.span,
                      f"the first: {first.message}" + (f"; {first.hint}" if first.hint else ""),
                      first.severity)


def errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "error"]


def spec_errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The errors of the spec itself, leaving out those about its data source."""
    return [d for d in errors(diagnostics) if not d.is_data]
