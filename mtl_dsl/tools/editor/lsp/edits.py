"""The edits the server offers: quick fixes (a "did you mean" hint's suggestion, declaring an
unknown label, removing an unused feature), rename, and formatting through the formatter
(docs/editors.md). A refused rename says why; nothing here changes the text on its own."""

from __future__ import annotations

import re

from lsprotocol import types as lsp

from ....language.analysis import Analysis
from ....language.context import KEYWORDS
from ....language.diagnostics import Diagnostic, MtlError, Span
from ....language.symbols import Declaration
from .positions import Lines
from .session import to_lsp

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = frozenset({*KEYWORDS, "over", "from"})


class Refused(Exception):
    """A rename that cannot be made, with the reason to show."""


def code_actions(analysis: Analysis, lines: Lines, uri: str, within: lsp.Range
                 ) -> list[lsp.CodeAction]:
    """The quick fixes of the diagnostics that touch `within`."""
    out = []
    for d in analysis.diagnostics:
        r = lines.range(d.span)
        if d.span is None or (r.end.line, r.end.character) < (within.start.line,
                                                                within.start.character) \
                or (r.start.line, r.start.character) > (within.end.line, within.end.character):
            continue
        for title, edits in _fixes(analysis, d, lines):
            out.append(lsp.CodeAction(
                title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[to_lsp(d, lines)],
                edit=lsp.WorkspaceEdit(changes={uri: edits}), is_preferred=bool(d.fix)))
    return out


def _fixes(analysis: Analysis, d: Diagnostic, lines: Lines):
    if d.fix is not None:
        yield f"Replace with '{d.fix.text}'", [lsp.TextEdit(lines.range(d.fix.span), d.fix.text)]
    name = re.search(r"'([^']*)'", d.message)
    if d.code == "E206" and name and NAME.fullmatch(name.group(1)):
        yield f"Declare label {name.group(1)}", [_declare_label(analysis, name.group(1), lines)]
    feature = next((x for x in analysis.named.get(name.group(1), []) if x.kind == "feature"),
                   None) if d.code == "W002" and name else None
    if feature is not None:
        end = feature.statement.end_line + 1
        yield f"Remove unused feature {feature.name}", [lsp.TextEdit(lsp.Range(
            lsp.Position(feature.statement.line - 1, 0),
            lsp.Position(end - 1, 0) if end <= len(lines.lines) else lines.end()), "")]


def _declare_label(analysis: Analysis, name: str, lines: Lines) -> lsp.TextEdit:
    """`, NAME` at the end of the last `label a, b` statement, else a `label NAME` line
    before the first task (or at the end)."""
    listing = [st for st in analysis.statements if st.keyword == "label" and st.expr is None]
    if listing:
        end = listing[-1].span
        at = lines.position(end.end_line, end.end_column)
        return lsp.TextEdit(lsp.Range(at, at), f", {name}")
    tasks = [st for st in analysis.statements if st.keyword == "task"]
    if tasks:
        at = lsp.Position(tasks[0].span.line - 1, 0)
        return lsp.TextEdit(lsp.Range(at, at), f"label {name}\n")
    end = lines.end()
    return lsp.TextEdit(lsp.Range(end, end), ("\n" if end.character else "") + f"label {name}\n")


def rename(analysis: Analysis, lines: Lines, line: int, column: int, new: str
           ) -> list[lsp.TextEdit]:
    """Every edit renaming the name at (line, column) to `new`; Refused with the reason when
    the name is not declared here, `new` is not a name, is a keyword, or is taken."""
    d = target(analysis, line, column)
    if not NAME.fullmatch(new):
        raise Refused(f"'{new}' is not a name: letters, digits and '_', not starting with a "
                      "digit")
    if new in RESERVED:
        raise Refused(f"'{new}' is a keyword of the language")
    labels = d.kind == "label"
    taken = [x for x in analysis.named.get(new, []) if (x.kind == "label") == labels]
    if taken and new != d.name:
        raise Refused(f"'{new}' is already declared at line {taken[0].statement.line}")
    edits = [lsp.TextEdit(lines.range(d.span), new)]
    for ref in analysis.references_to(d):
        if ref.declaration == d:
            edits.append(lsp.TextEdit(lines.range(ref.span), new))
        else:  # a name a template made: its prefix is the template's name
            s = ref.span
            edits.append(lsp.TextEdit(lines.range(Span(s.line, s.column, s.line,
                                                       s.column + len(d.name))), new))
    if d.kind == "task":
        edits += _template_outputs(analysis, lines, d.name, new)
    return edits


def target(analysis: Analysis, line: int, column: int) -> Declaration:
    """The declaration a rename at (line, column) renames."""
    symbol = analysis.symbol_at(line, column)
    d = analysis.declaration_of(symbol)
    if d is None:
        raise Refused("no declared name here" if symbol is None else
                      f"'{symbol.name}' is not declared in this spec")
    if d.template is not None:
        raise Refused(f"'{d.name}' is made by template '{d.template}'; rename the template "
                      "or its tasks")
    if d.kind in ("transfer", "model"):
        raise Refused(f"a {d.kind} is not referred to by name")
    return d


def _template_outputs(analysis: Analysis, lines: Lines, old: str, new: str) -> list:
    """A task a template is written for names its outputs (`p.ctr`, `h.mix_ctr`): renamed
    with it."""
    out = []
    for ref in analysis.references:
        d = ref.declaration
        if d is None or d.template is None:
            continue
        tail = re.search(rf"(?:^|[._]){re.escape(old)}$", ref.name)
        if tail:
            s = ref.span
            start = s.column + len(ref.name) - len(old)
            out.append(lsp.TextEdit(lines.range(Span(s.line, start, s.line, s.end_column)), new))
    return out


def formatted(text: str, lines: Lines) -> list[lsp.TextEdit] | None:
    """One edit replacing the whole document with the formatter's layout; none when it is
    unchanged, the text does not parse, or no formatter is installed."""
    try:
        from ....language.formatter import format_text
    except ImportError:  # the formatter ships separately: no edit, no error
        return None
    try:
        new = format_text(text)
    except MtlError:
        return None
    return [] if new == text else [lsp.TextEdit(lines.whole(), new)]
