"""The names of a spec: every declaration and every reference, read from the syntax tree (so
that a spec with errors, or with a statement that does not parse, still has them) and, for
templates, from the IR they expand into.

Which kinds of names may stand where is the validator's table (validation/model.py's
REPRESENTATION and the checks that use it), written here once more as positions in the syntax:
`REFERENCE_KEYS` for `key=NAME` arguments, `INPUT_KINDS` for a call's positional input, and
the connectives (`over`, `from`, `->`, products). The editor's completion reads the same tables
(language/context.py), so what it offers is what validation accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .diagnostics import Span
from .ir import Spec
from .reader import NESTED_ROLE
from .syntax import Call, ListValue, Ref, Statement, refs_in
from .validation.model import REPRESENTATION

# What each statement keyword declares (label declares every name it lists).
DECLARES = {"model": "model", "feature": "feature", "label": "label", "input": "input",
            "experts": "expert", "gate": "gate", "tower": "tower", "task": "task",
            "extract": "extract", "transfer": "transfer"}
# key=NAME arguments that name something declared, and the kinds they may name.
REFERENCE_KEYS: dict[str, tuple[str, ...]] = {
    "label": ("label",), "where": ("label",), "stratify": ("label",), "share": ("feature",),
    "query": ("feature",), "by": REPRESENTATION, "tasks": ("task",), "stop": ("expert",),
    "monitor": ("task",)}
COLUMN_KEYS = ("group", "column")  # key=NAME arguments that name a data column
# The kinds a call's first positional argument (its input) may name, by the call's role.
INPUT_KINDS: dict[str, tuple[str, ...]] = {"input": ("feature", "input"), "net": REPRESENTATION,
                                           "gate": REPRESENTATION, "extract": REPRESENTATION}
# The role a statement's call is looked up in (docs/language.md, "Statements").
ROLES = {"data": "data", "feature": "feature", "input": "input", "experts": "net",
         "gate": "gate", "tower": "net", "task": "task", "transfer": "transfer",
         "extract": "extract", "weighting": "weighting", "train": "train"}
OVER, FROM, CHAIN = ("expert",), ("tower",), ("task",)  # after `over`, `from`, `->`
DERIVED = ("label", "column")  # what a derived label's expression reads


@dataclass(frozen=True)
class Declaration:
    """A declared name: its kind (a task-graph kind, docs/internals.md, or label, model,
    extract, transfer), where the name is written and its whole statement; `template` is the
    extract statement that made it, for the names a template expands into."""

    name: str
    kind: str
    span: Span
    statement: Span
    template: str | None = None


@dataclass(frozen=True)
class Reference:
    """A name written where a declared one goes: the kinds allowed there, and the declaration
    it names (None: nothing of that name, or a data column)."""

    name: str
    span: Span
    kinds: tuple[str, ...]
    declaration: Declaration | None = None


def declarations(statements: list[Statement], spec: Spec | None) -> list[Declaration]:
    """Every declaration, in the order written, then the names templates expand into."""
    found: list[Declaration] = []
    for st in statements:
        kind = DECLARES.get(st.keyword)
        if st.keyword == "label" and st.expr is None:
            found += [Declaration(r.name, "label", r.span, st.span) for r in st.refs]
        elif st.keyword == "transfer" and st.refs:
            first, last = st.refs[0].span, st.refs[-1].span
            found.append(Declaration("->".join(r.name for r in st.refs), "transfer",
                                     Span(first.line, first.column, last.end_line,
                                          last.end_column), st.span))
        elif kind is not None and st.name is not None:
            found.append(Declaration(st.name, kind, st.name_span, st.span))
    return found + _expanded(found, spec)


def _expanded(found: list[Declaration], spec: Spec | None) -> list[Declaration]:
    """The nodes and aliases (`p.ctr`) of every template, declared by its extract."""
    if spec is None:
        return []
    extracts = {d.name: d for d in found if d.kind == "extract"}
    kinds = [("expert", spec.experts), ("gate", spec.gates), ("critics", spec.critics)]
    made = []
    for e in spec.extracts:
        where = extracts.get(e.name)
        if where is None:
            continue
        made += [Declaration(n.name, kind, where.span, where.statement, e.name)
                 for kind, nodes in kinds for n in nodes
                 if n.name.startswith(e.name + ".")]
        made += [Declaration(f"{e.name}.{task}", "gate", where.span, where.statement, e.name)
                 for task in e.outputs]
    return made


def by_name(found: list[Declaration]) -> dict[str, list[Declaration]]:
    """Name -> its declarations in the order written (labels and nodes may share a name: a
    task `click` on a label `click`; transfers are not named by references)."""
    out: dict[str, list[Declaration]] = {}
    for d in found:
        if d.kind != "transfer":
            out.setdefault(d.name, []).append(d)
    return out


def resolve(named: list[Declaration], kinds: tuple[str, ...]) -> Declaration | None:
    """The declaration a reference allowing `kinds` names. Labels are names of their own
    (`label=`, `where=`, a derived label's expression), nodes another; among those, the first
    of an allowed kind (a template's names count as any node), else the first (a node of the
    wrong kind, E203, still leads to its declaration)."""
    labels = "label" in kinds
    named = [d for d in named if (d.kind == "label") == labels]
    allowed = [d for d in named if d.kind in kinds or d.template is not None]
    return (allowed or named or [None])[0]


def references(statements: list[Statement], declared: dict[str, list[Declaration]]
               ) -> list[Reference]:
    """Every name written where a declared one goes, resolved in `declared` (by_name)."""
    found: list[tuple[Ref, tuple[str, ...]]] = []
    for st in statements:
        found += _in_statement(st)
    return [Reference(ref.name, ref.span, kinds, resolve(declared.get(ref.name, []), kinds))
            for ref, kinds in found]


def _in_statement(st: Statement) -> list[tuple[Ref, tuple[str, ...]]]:
    """The references of one statement, each with the kinds allowed there."""
    found: list[tuple[Ref, tuple[str, ...]]] = []
    if st.call is not None:
        found += _in_call(st.call, ROLES.get(st.keyword, ""))
    if st.keyword == "train":
        found += _in_call(Call("train", (), st.kwargs, st.span, st.span), "train")
    if st.keyword == "gate":
        found += [(r, OVER) for r in st.refs]
    elif st.keyword == "task" and st.expr is None:
        found += [(r, FROM) for r in st.refs]
    elif st.keyword == "transfer":
        found += [(r, CHAIN) for r in st.refs]
    if st.expr is not None:
        found += [(r, CHAIN if st.keyword == "task" else DERIVED) for r in refs_in(st.expr)]
    return found


def _in_call(call: Call, role: str) -> list[tuple[Ref, tuple[str, ...]]]:
    """A call's references: its input (and, for concat, every part), its key=NAME arguments,
    and those of the calls nested in it."""
    found: list[tuple[Ref, tuple[str, ...]]] = []
    inputs = INPUT_KINDS.get(role)
    positional = call.args if role == "input" else call.args[:1]
    if inputs is not None:
        found += [(a, inputs) for a in positional if isinstance(a, Ref)]
    for kw in call.kwargs:
        kinds = REFERENCE_KEYS.get(kw.key)
        values = kw.value.items if isinstance(kw.value, ListValue) else (kw.value,)
        for value in values:
            if isinstance(value, Ref) and kinds is not None:
                found.append((_task_of(value) if kw.key == "monitor" else value, kinds))
            elif isinstance(value, Call):
                found += _in_call(value, NESTED_ROLE.get(kw.key, ""))
    return found


def _task_of(ref: Ref) -> Ref:
    """`monitor=TASK.METRIC`: only TASK names something declared."""
    task, s = ref.name.split(".")[0], ref.span
    return Ref(task, Span(s.line, s.column, s.line, s.column + len(task)))
