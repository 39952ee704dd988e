"""Hover and completion: what the registry, the symbol index and the diagnostic codes say about
the text under or before the cursor (language/analysis.py, language/describe.py,
language/codes.py; docs/editors.md). Plain data: the language server turns it into the
protocol's types, the studio's page reads it as JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import describe
from . import registry as reg
from .analysis import Analysis
from .codes import CODES
from .context import KEYWORDS, Slot
from .reader import NESTED_ROLE
from .space import DISTRIBUTIONS
from .symbols import ROLES, Declaration
from .syntax import Call, ListValue, Statement

_CODE = re.compile(r"\b[EW]\d{3}\b")
KIND_NAMES = {"expert": "expert group", "critics": "critics"}


@dataclass(frozen=True)
class Completion:
    """One completion: `kind` names the sort of thing it is in the Language Server Protocol's
    words (its CompletionItemKind member: Keyword, Function, Property, ...), `doc` Markdown."""

    label: str
    kind: str
    detail: str = ""
    doc: str | None = None
    insert: str | None = None


def hover(analysis: Analysis, line: int, column: int) -> str | None:
    """Markdown for what is at (line, column): a kind, a parameter, a name, a code."""
    parts = [text for text in (_in_call(analysis, line, column),
                               _symbol(analysis, line, column),
                               _code(analysis, line, column)) if text]
    return "\n\n---\n\n".join(parts) or None


def _in_call(analysis: Analysis, line: int, column: int) -> str | None:
    st = analysis.statement_at(line, column)
    if st is None:
        return None
    for role, call in _calls(st):
        if _on(call.name_span, line, column):
            return describe.kind_markdown(role, call.name)
        for kw in call.kwargs:
            s = kw.span
            if s.line == line and s.column <= column <= s.column + len(kw.key):
                p = describe.param(role, call.name, kw.key)
                return None if p is None else f"{p.markdown()}\n\n(a parameter of `{call.name}`)"
    return None


def _calls(st: Statement):
    """(role, call) for the statement's call and every call nested in it."""
    todo: list[tuple[str, Call]] = []
    if st.call is not None:
        todo.append((ROLES.get(st.keyword, ""), st.call))
    if st.keyword == "train":
        todo.append(("train", Call("train", (), st.kwargs, st.span, st.span)))
    while todo:
        role, call = todo.pop()
        yield role, call
        for kw in call.kwargs:
            values = kw.value.items if isinstance(kw.value, ListValue) else (kw.value,)
            todo += [(NESTED_ROLE.get(kw.key, ""), v) for v in values if isinstance(v, Call)]


def _on(span, line: int, column: int) -> bool:
    return span.line == line == span.end_line and span.column <= column <= span.end_column


def _symbol(analysis: Analysis, line: int, column: int) -> str | None:
    symbol = analysis.symbol_at(line, column)
    if symbol is None:
        return None
    d = analysis.declaration_of(symbol)
    if d is None:
        what = " or ".join(KIND_NAMES.get(k, k) for k in symbol.kinds)
        return f"`{symbol.name}`: nothing declared of this name (a {what} goes here)"
    return declaration_markdown(analysis, d)


def declaration_markdown(analysis: Analysis, d: Declaration) -> str:
    """A name's hover: its kind and declaration line, its block's width, parameters and the
    tasks that share it."""
    lines = [f"**{d.name}**: {KIND_NAMES.get(d.kind, d.kind)}, declared at line "
             f"{d.statement.line}" + (f" by template `{d.template}`" if d.template else "")]
    block = analysis.blocks.get(d.name)
    if block is not None and block.width is not None:
        lines.append(f"output width {block.width}; {block.params:,} parameters")
        if block.tasks:
            lines.append(("shared by " if len(block.tasks) > 1 else "used by ") +
                         ", ".join(block.tasks))
    return "  \n".join(lines)


def _code(analysis: Analysis, line: int, column: int) -> str | None:
    """A code under the cursor in a comment, or the diagnostics at the cursor, explained."""
    row = analysis.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[line - 1:line]
    for m in _CODE.finditer(row[0] if row else ""):
        if m.start() < column <= m.end() + 1 and m.group() in CODES:
            return f"**{m.group()}**: {CODES[m.group()]}"
    found = [d for d in analysis.diagnostics if d.span is not None and
             (d.span.line, d.span.column) <= (line, column) <= (d.span.end_line, d.span.end_column)]
    return "\n\n".join(f"**{d.code}**: {CODES[d.code]}" for d in found if d.code in CODES) or None


def completion(analysis: Analysis, slot: Slot, columns: tuple[str, ...]) -> list[Completion]:
    """The items that fit `slot`, the data source's `columns` where a column goes."""
    items = _ITEMS.get(slot.what, lambda *_: [])(analysis, slot, columns)
    seen, out = set(), []
    for item in items:  # the client filters by what is typed
        if item.label not in seen:
            seen.add(item.label)
            out.append(item)
    return out


def _item(label: str, kind: str, detail: str = "", doc: str | None = None,
          insert: str | None = None) -> Completion:
    return Completion(label, kind, detail, doc, insert)


def _keywords(analysis, slot, columns):
    return [_item(k, "Keyword", "statement") for k in KEYWORDS]


def _kinds(analysis, slot, columns):
    items = [_item(name, "Function", f"{slot.role} kind",
                   describe.kind_markdown(slot.role, name))
             for name in reg.REGISTRY.get(slot.role, {})]
    return items + _spaces() if slot.role == "weighting" else items


def _spaces():
    return [_item(name, "Function", "search space (docs/tuning.md)")
            for name in DISTRIBUTIONS]


def _arguments(analysis, slot, columns):
    kind = describe.kind(slot.role, slot.kind)
    positional = {s.lstrip("*") for s in (kind.positional if kind else ())}
    items = [_item(f"{p.name}=", "Property", p.type, p.markdown())
             for p in describe.params(slot.role, slot.kind)
             if p.name not in slot.given and p.name not in positional]
    return _names(analysis, slot, columns) + items


def _values(analysis, slot, columns):
    p = describe.param(slot.role, slot.kind, slot.param)
    items = [_item(v, "EnumMember", slot.param)
             for v in (p.values if p else ())]
    if slot.param == "metrics" and slot.kind in reg.TASK_METRICS:
        items += [_item(m, "EnumMember", "metric")
                  for m in sorted(reg.TASK_METRICS[slot.kind])]
    if slot.param == "monitor":
        items += [_item(f"{t.name}.{m}", "Value", "task.metric")
                  for t in (analysis.checked.spec.tasks if analysis.checked else ())
                  for m in (*t.params.metrics, "loss")]
    if slot.nested:
        items += [_item(name, "Function", f"{slot.nested} kind",
                        describe.kind_markdown(slot.nested, name))
                  for name in reg.REGISTRY.get(slot.nested, {})]
    return items + _names(analysis, slot, columns) + _spaces()


def _names(analysis, slot, columns):
    items = [_item(d.name, _NAME_KINDS.get(d.kind, "Variable"),
                   KIND_NAMES.get(d.kind, d.kind), declaration_markdown(analysis, d))
             for d in analysis.names_of(slot.kinds)]
    if slot.columns:
        items += [_item(c, "Field", "data column") for c in columns]
    return items


def _connectives(analysis, slot, columns):
    return [_item(w, "Keyword") for w in slot.words]


_ITEMS = {"keyword": _keywords, "kind": _kinds, "argument": _arguments, "value": _values,
          "name": _names, "connective": _connectives}
_NAME_KINDS = {"feature": "Field", "label": "Constant",
               "input": "Variable", "expert": "Class",
               "gate": "Interface", "tower": "Struct",
               "task": "Method", "critics": "Class"}

