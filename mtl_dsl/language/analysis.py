"""The analysis core: what the editor, `mtl lsp` and a live page know of a spec, in one object.

`analyse(text)` gives the diagnostics exactly as `mtl check` reports them (language/check.py's
front end, syntax errors included, as diagnostics), the symbol index (language/symbols.py:
declarations, and references resolved to them), every block's output width, parameter count and
the tasks that share it (language/size.py and the task graph; None while the spec has errors),
and a search space's dimensions. Queries answer an editor's questions: the symbol at a
position, the references of a declaration, what fits at a position (language/context.py), the
statement at a position. `to_json()` is the same as plain data.

`Analyser` keeps what one document's previous text had in common with the next
(language/incremental.py), so a check while typing re-reads only the edited statement. Positions
are 1-based lines and columns in characters, end exclusive (`diagnostics.Span`), everywhere,
JSON included. See docs/internals.md, "The analysis core".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from . import registry as reg
from .check import Checked
from .context import Slot, slot_at
from .diagnostics import Diagnostic, Span, spec_errors
from .incremental import Incremental
from .size import block_params
from .space import Dimension
from .symbols import Declaration, Reference, by_name, declarations, references
from .syntax import Statement
from .validation import ColumnLookup


@dataclass(frozen=True)
class Block:
    """A node of the task graph: its kind, output width, parameters (what the compiler builds
    for it; 0 for a block it leaves out) and the tasks that depend on it; None where the spec's
    errors leave them unknown."""

    name: str
    kind: str
    width: int | None
    params: int | None
    tasks: tuple[str, ...] | None


@dataclass(frozen=True)
class Analysis:
    """One text's analysis (see the module's docstring)."""

    text: str
    path: str | None
    diagnostics: list[Diagnostic]
    statements: list[Statement]
    checked: Checked | None = field(default=None, repr=False)

    # The symbol index and the blocks are built on first use: publishing diagnostics while
    # typing needs neither, and a 100 KB spec's index is thousands of objects.
    @cached_property
    def declarations(self) -> list[Declaration]:
        """Every declaration in the order written, then the names templates make."""
        return declarations(self.statements, self.checked.spec if self.checked else None)

    @cached_property
    def references(self) -> list[Reference]:
        """Every name written where a declared one goes, resolved."""
        return references(self.statements, self.named)

    @cached_property
    def blocks(self) -> dict[str, Block]:
        """Every block of the task graph (empty when the spec does not parse)."""
        return _blocks(self.checked)

    def index(self) -> "Analysis":
        """This analysis with its symbol index and blocks built (off the caller's thread)."""
        self.references, self.blocks  # noqa: B018 - built and kept
        return self

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        """A search space's dimensions (docs/tuning.md); empty for an ordinary spec."""
        return self.checked.space.dims if self.checked is not None else ()

    @cached_property
    def named(self) -> dict[str, list[Declaration]]:
        """Name -> its declarations (a label and a node may share a name; a node declared
        twice is E202)."""
        return by_name(self.declarations)

    @cached_property
    def declared(self) -> dict[str, Declaration]:
        """Name -> its first declaration."""
        return {name: ds[0] for name, ds in self.named.items()}

    def symbol_at(self, line: int, column: int) -> Declaration | Reference | None:
        """The declaration or reference whose name covers (line, column) (the character
        after a name counts, as an editor's cursor at its end)."""
        for ref in self.references:
            if _covers(ref.span, line, column):
                return ref
        for d in self.declarations:
            if d.template is None and _covers(d.span, line, column):
                return d
        return None

    def declaration_of(self, symbol: Declaration | Reference | None) -> Declaration | None:
        return symbol.declaration if isinstance(symbol, Reference) else symbol

    def references_to(self, declaration: Declaration) -> list[Reference]:
        """Every reference to `declaration`, and for an extract, to the names it makes."""
        if declaration.kind == "extract":
            return [r for r in self.references if r.declaration is not None and
                    (r.declaration == declaration or r.declaration.template == declaration.name)]
        return [r for r in self.references if r.declaration == declaration]

    def statement_at(self, line: int, column: int = 1) -> Statement | None:
        """The statement whose lines hold (line, column)."""
        for st in self.statements:
            if st.span.line <= line <= st.span.end_line:
                return st
        return None

    def slot_at(self, line: int, column: int) -> Slot:
        """What may be written at (line, column): language/context.py."""
        return slot_at(self.text, line, column)

    def names_of(self, kinds: tuple[str, ...]) -> list[Declaration]:
        """The declarations of those kinds, each name once, in the order written."""
        return [next(d for d in ds if d.kind in kinds) for ds in self.named.values()
                if any(d.kind in kinds for d in ds)]

    def to_json(self) -> dict:
        """The analysis as plain data; positions are 1-based line/column, end exclusive."""
        return {"path": self.path, "ok": not spec_errors(self.diagnostics),
                "diagnostics": [_diagnostic(d) for d in self.diagnostics],
                "declarations": [_declaration(d) for d in self.declarations],
                "references": [{"name": r.name, "span": _span(r.span), "kinds": list(r.kinds),
                                "declaration": _where(r.declaration)} for r in self.references],
                "blocks": {n: {"kind": b.kind, "width": b.width, "params": b.params,
                               "tasks": None if b.tasks is None else list(b.tasks)}
                           for n, b in self.blocks.items()},
                "dimensions": [_dimension(d) for d in self.dimensions],
                "params": None if self.checked is None or self.checked.size is None
                else self.checked.size.params}


class Analyser:
    """Analyses successive texts of one document, re-using what they share; not thread-safe
    (one thread at a time)."""

    def __init__(self) -> None:
        self._front = Incremental()

    def analyse(self, text: str, path: str | None = None, columns: ColumnLookup | None = None,
                max_params: int = reg.MAX_PARAMS) -> Analysis:
        front = self._front.check(text, path or "<spec>", path, columns, max_params)
        return Analysis(text, path, front.diagnostics, front.statements, front.checked)


def analyse(text: str, path: str | None = None, columns: ColumnLookup | None = None
            ) -> Analysis:
    """One text's analysis, from nothing (an Analyser re-uses an earlier text's work)."""
    return Analyser().analyse(text, path, columns)


def _blocks(checked: Checked | None) -> dict[str, Block]:
    """Every graph node of the spec (embedding tables and critic uses aside)."""
    if checked is None:
        return {}
    tg, known = checked.graph, not spec_errors(checked.diagnostics) and checked.graph.acyclic
    params = block_params(checked.spec, tg) if known else {}
    out = {}
    for name, data in tg.g.nodes.items():
        if data["kind"] in ("embedding", "critic_use"):
            continue
        out[name] = Block(name, data["kind"], tg.widths.get(name) if known else None,
                          params.get(name, 0) if known else None,
                          tuple(sorted(tg.tasks_of.get(name, ()))) if known else None)
    return out


def _covers(span: Span, line: int, column: int) -> bool:
    return span.line == line and span.column <= column <= span.end_column and \
        span.end_line == line


def _span(span: Span | None) -> dict | None:
    if span is None:
        return None
    return {"line": span.line, "column": span.column, "end_line": span.end_line,
            "end_column": span.end_column}


def _where(d: Declaration | None) -> dict | None:
    return None if d is None else {"name": d.name, "kind": d.kind, "span": _span(d.span)}


def _declaration(d: Declaration) -> dict:
    return {"name": d.name, "kind": d.kind, "span": _span(d.span),
            "statement": _span(d.statement), "template": d.template}


def _diagnostic(d: Diagnostic) -> dict:
    return {"code": d.code, "severity": d.severity, "message": d.message, "hint": d.hint,
            "span": _span(d.span),
            "fix": None if d.fix is None else {"span": _span(d.fix.span), "text": d.fix.text}}


def _dimension(d: Dimension) -> dict:
    return {"name": d.name, "kind": d.kind, "spans": [_span(s) for s in d.spans],
            "options": list(d.options), "low": d.low, "high": d.high}
