"""What the server shows of a spec's shape: document symbols (the outline, templates holding the
names they make), folding ranges (wrapped calls, comment blocks, groups of statements), semantic
tokens (names coloured by what they declare or name) and inlay hints (each block's width and
parameters), all read from one analysis (language/analysis.py; docs/editors.md)."""

from __future__ import annotations

import re

from lsprotocol import types as lsp

from ....language import describe
from ....language import registry as reg
from ....language.analysis import Analysis
from ....language.context import KEYWORDS
from ....language.diagnostics import Span
from .positions import Lines

SYMBOL_KINDS = {"model": lsp.SymbolKind.Module, "feature": lsp.SymbolKind.Field,
                "label": lsp.SymbolKind.Constant, "input": lsp.SymbolKind.Variable,
                "expert": lsp.SymbolKind.Class, "gate": lsp.SymbolKind.Interface,
                "tower": lsp.SymbolKind.Struct, "task": lsp.SymbolKind.Function,
                "extract": lsp.SymbolKind.Namespace, "transfer": lsp.SymbolKind.Event,
                "critics": lsp.SymbolKind.Class}
SETTINGS = ("data", "weighting", "train")


def symbols(analysis: Analysis, lines: Lines) -> list[lsp.DocumentSymbol]:
    """Every declaration and setting in the order written; an extract holds what it makes."""
    made: dict[str, list[lsp.DocumentSymbol]] = {}
    out = []
    for d in analysis.declarations:
        symbol = lsp.DocumentSymbol(
            name=d.name, kind=SYMBOL_KINDS.get(d.kind, lsp.SymbolKind.Variable),
            range=lines.range(d.statement), selection_range=lines.range(d.span),
            detail=_detail(analysis, d.name, d.kind))
        if d.template is not None:
            made.setdefault(d.template, []).append(symbol)
        else:
            out.append(symbol)
    for symbol in out:
        if symbol.kind == lsp.SymbolKind.Namespace:
            symbol.children = made.get(symbol.name)
    out += [lsp.DocumentSymbol(name=st.keyword + (f" {st.call.name}" if st.call else ""),
                               kind=lsp.SymbolKind.Property, range=lines.range(st.span),
                               selection_range=lines.range(st.span))
            for st in analysis.statements if st.keyword in SETTINGS]
    return sorted(out, key=lambda s: (s.range.start.line, s.range.start.character))


def _detail(analysis: Analysis, name: str, kind: str) -> str:
    block = analysis.blocks.get(name)
    if block is not None and block.width is not None:
        return f"{kind} → {block.width}"
    return kind


def folding(analysis: Analysis) -> list[lsp.FoldingRange]:
    """Wrapped statements, runs of comment lines, and groups of statements between blank
    lines (0-based lines, as the protocol counts them)."""
    out = [lsp.FoldingRange(st.span.line - 1, st.span.end_line - 1)
           for st in analysis.statements if st.span.end_line > st.span.line]
    rows = analysis.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out += _runs(rows, lambda r: r.lstrip().startswith("#"), lsp.FoldingRangeKind.Comment)
    out += _runs(rows, lambda r: bool(r.strip()), lsp.FoldingRangeKind.Region)
    return out


def _runs(rows: list[str], inside, kind) -> list[lsp.FoldingRange]:
    out, start = [], None
    for n, row in enumerate([*rows, ""]):
        if inside(row) and start is None:
            start = n
        elif not inside(row) and start is not None:
            if n - 1 > start:
                out.append(lsp.FoldingRange(start, n - 1, kind=kind))
            start = None
    return out


# Semantic tokens: the legend, and the type of a declared name by its kind.
TOKEN_TYPES = ["keyword", "function", "parameter", "number", "string", "comment", "operator",
               "enumMember", "variable", "property", "class", "interface", "struct", "method",
               "namespace", "type"]
TOKEN_MODIFIERS = ["declaration", "defaultLibrary"]
NAME_TYPES = {"model": "type", "feature": "variable", "input": "variable", "label": "property",
              "expert": "class", "critics": "class", "gate": "interface", "tower": "struct",
              "task": "method", "extract": "namespace", "transfer": "method"}
_TOKEN = re.compile(r'(?P<comment>#.*)|(?P<string>"(?:[^"\\]|\\.)*"?)'
                    r'|(?P<number>-?\d[\w.]*(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w.]*)'
                    r'|(?P<operator>->|==|!=|<=|>=|[=:+\-*&|!<>])')
_KINDS = frozenset(n for role in reg.REGISTRY.values() for n in role)
_VALUES = frozenset(v for role in reg.REGISTRY for k in reg.REGISTRY[role]
                    for p in describe.params(role, k) for v in p.values)


def tokens(analysis: Analysis, lines: Lines) -> list[int]:
    """The whole document's semantic tokens, relative-encoded as the protocol wants."""
    names = {(r.span.line, r.span.column): (NAME_TYPES.get(r.declaration.kind, "variable"), 0)
             for r in analysis.references if r.declaration is not None}
    names.update({(d.span.line, d.span.column): (NAME_TYPES.get(d.kind, "variable"), 1)
                  for d in analysis.declarations if d.template is None and d.kind != "transfer"})
    data, last = [], (0, 0)
    for n, row in enumerate(lines.lines, start=1):
        for m in _TOKEN.finditer(row):
            kind, text, column = m.lastgroup, m.group(), m.start() + 1
            found = _classify(kind, text, row, m, names.get((n, column)))
            if found is None:
                continue
            token, modifiers = found
            line0, start = n - 1, lines.length(n, 1, m.start())
            data += [line0 - last[0], start - last[1] if line0 == last[0] else start,
                     lines.length(n, column, len(text)), TOKEN_TYPES.index(token), modifiers]
            last = (line0, start)
    return data


def _classify(kind: str, text: str, row: str, m: re.Match, named) -> tuple[str, int] | None:
    if kind != "name":
        return kind, 0
    if named is not None:
        return named
    after = row[m.end():].lstrip()
    if m.start() == len(row) - len(row.lstrip()) and text in KEYWORDS or text in ("over", "from"):
        return "keyword", 0
    if after.startswith("=") and not after.startswith("=="):
        return "parameter", 0
    if text in _KINDS and (after.startswith("(") or row[:m.start()].rstrip()[-1:] in "=:"
                           or row[:m.start()].split()[:1] in (["data"], ["weighting"])):
        return "function", 2
    if text in _VALUES:
        return "enumMember", 0
    return None


def inlay_hints(analysis: Analysis, lines: Lines, within: lsp.Range) -> list[lsp.InlayHint]:
    """`→ WIDTH` after each block's statement, and the parameters of each expert group, tower,
    task and template."""
    out = []
    templates: dict[str, int] = {}
    for d in analysis.declarations:
        block = analysis.blocks.get(d.name)
        if d.template is not None and block is not None and block.params is not None:
            templates[d.template] = templates.get(d.template, 0) + block.params
    for d in analysis.declarations:
        if d.template is not None or not within.start.line < d.statement.end_line <= \
                within.end.line + 1:
            continue
        block = analysis.blocks.get(d.name)
        label = None
        if block is not None and block.width is not None:
            label = f"→ {block.width}"
            if d.kind in ("expert", "tower", "task"):
                label += f" · {block.params:,} params"
        elif d.name in templates:
            label = f"{templates[d.name]:,} params"
        if label is not None:
            end = d.statement
            out.append(lsp.InlayHint(position=lines.position(end.end_line, end.end_column),
                                     label=label, padding_left=True))
    return out


def span_of(line: int, column: int, end: int) -> Span:
    return Span(line, column, line, end)
