"""Statements to IR nodes: one handler per statement keyword.

Every problem becomes a diagnostic and the statement's node is left out (its
names are remembered, so nothing cascades into "unknown" or "unused"). Template
statements (PLE/CGC/MetaHeac) are expanded into ordinary expert groups and gates
(:mod:`.templates`). Cross-references are *not* checked here: that is
:mod:`.validate`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import registry as reg
from .syntax import Call, ListValue, Ref, Statement, refs_in
from .diagnostics import Diagnostic, Span
from .ir import (DerivedLabel, ExpertGroup, Extract, Feature, Gate, Input, Spec, Task, Tower,
                 Transfer, make_setting)
from .reader import Reader, as_mlp, kw_refs, ref_arg
from .templates import expand_template

SINGLE = ("model", "data", "weighting", "train")


PARTS = ("features", "inputs", "experts", "gates", "towers", "tasks", "extracts", "labels",
         "derived_labels", "transfers", "critics")


@dataclass(frozen=True)
class Read:
    """What one statement adds to the IR: its nodes by part, the fields it sets, its
    diagnostics, the names left broken, and the nodes its templates expand into. A statement
    is read alone (no handler looks at another statement), so an unchanged statement's
    reading can be re-used (language/incremental.py)."""

    parts: dict[str, list]
    fields: dict
    diagnostics: list[Diagnostic]
    broken: set[str]
    broken_refs: set[str]
    expanded: tuple[list[ExpertGroup], list[Gate], list]


def read_statement(st: Statement) -> Read:
    """One statement through its keyword's handler, templates expanded."""
    r, parts, fields = Reader(), {k: [] for k in PARTS}, {}
    _HANDLERS[st.keyword](r, st, parts, fields)
    broken, broken_refs = set(), set()
    if r.diagnostics:  # so nothing cascades into "unknown" or "unused"
        broken.add(st.name or st.keyword)
        broken_refs.update(_names_in(st))
    expanded: tuple[list, list, list] = ([], [], [])
    for extract in parts["extracts"]:
        for made, into in zip(expand_template(extract), expanded):
            into += made
    return Read(parts, fields, r.diagnostics, broken, broken_refs, expanded)


def build(statements: list[Statement], text: str = "", path: str | None = None,
          memo: dict[Statement, Read] | None = None) -> tuple[Spec, list[Diagnostic]]:
    """Build the IR; every problem becomes a diagnostic and the node is left out. `memo`
    keeps each statement's reading for the next build of an edited text."""
    r = Reader()
    parts: dict[str, list] = {k: [] for k in PARTS}
    fields: dict = {"name": Path(path).stem if path else "model", "path": path, "source": text}
    seen: dict[str, Statement] = {}
    expanded: tuple[list, list, list] = ([], [], [])
    for st in statements:
        if st.keyword in SINGLE:
            if st.keyword in seen:
                first = seen[st.keyword].span
                r.error("E205", f"a spec has one '{st.keyword}' statement", st.span,
                        f"the first is at line {first.line}")
                continue
            seen[st.keyword] = st
        done = memo.get(st) if memo is not None else None
        if done is None:
            done = read_statement(st)
            if memo is not None:
                memo[st] = done
        for key, nodes in done.parts.items():
            parts[key] += nodes
        fields.update(done.fields)
        r.diagnostics += done.diagnostics
        r.broken |= done.broken
        r.broken_refs |= done.broken_refs
        for made, into in zip(done.expanded, expanded):
            into += made
    parts["features"] = _inherit_dims(parts["features"])
    parts["experts"] += expanded[0]
    parts["gates"] += expanded[1]
    parts["critics"] += expanded[2]
    spec = Spec(**fields, **{k: tuple(v) for k, v in parts.items()},
                broken=frozenset(r.broken), broken_refs=frozenset(r.broken_refs))
    return spec, r.diagnostics


def _inherit_dims(features: list[Feature]) -> list[Feature]:
    """A sparse feature without `dim` takes its shared table's dim, else the default 16."""
    index = {f.name: f for f in features}

    def dim(f: Feature, depth: int = 0) -> int:
        if f.params.dim is not None:
            return f.params.dim
        owner = index.get(f.params.share or "")
        if owner is not None and owner.embedded and depth < len(features):
            return dim(owner, depth + 1)
        return reg.DEFAULT_EMBEDDING_DIM

    return [f.model_copy(update={"params": f.params.model_copy(update={"dim": dim(f)})})
            if f.embedded and f.params.dim is None else f for f in features]


def _names_in(st: Statement) -> set[str]:
    values: list = [*st.refs, *(k.value for k in st.kwargs)]
    values += refs_in(st.expr) if st.expr is not None else []
    if st.call is not None:
        values += [*st.call.args, *(k.value for k in st.call.kwargs)]
    names = set()
    while values:
        v = values.pop()
        if isinstance(v, Ref):
            names.add(v.name)
        elif isinstance(v, ListValue):
            values += v.items
        elif isinstance(v, Call):
            values += [*v.args, *(k.value for k in v.kwargs)]
    return names


def _model(r: Reader, st: Statement, parts, fields) -> None:
    fields["name"], fields["description"] = st.name, st.text


def _setting(role: str):
    def handle(r: Reader, st: Statement, parts, fields) -> None:
        kind = r.kind(role, st.call, role)
        if kind is None:
            return
        params, spans = r.params(kind, st.call)
        if params is not None:
            fields[role] = make_setting(role, kind.name, params, st.span, spans)
    return handle


def _train(r: Reader, st: Statement, parts, fields) -> None:
    call = Call("train", (), st.kwargs, st.span, st.span)
    params, spans = r.params(reg.kinds("train")["train"], call)
    if params is not None:
        fields["train"] = make_setting("train", "train", params, st.span, spans)


def _feature(r: Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("feature", st.call, "feature")
    params = kind and r.params(kind, st.call)[0]
    if params is not None:
        parts["features"].append(Feature(name=st.name, span=st.name_span, kind=kind.name,
                                         params=params))


def _label(r: Reader, st: Statement, parts, fields) -> None:
    if st.expr is not None:
        parts["derived_labels"].append(DerivedLabel(name=st.name, span=st.name_span,
                                                    expr=st.expr))
    else:
        parts["labels"].extend(st.refs)


def _transfer(r: Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("transfer", st.call, "transfer")
    params = kind and r.params(kind, st.call)[0]
    if params is not None:
        name = "->".join(ref.name for ref in st.refs)
        span = Span(st.refs[0].span.line, st.refs[0].span.column, st.refs[-1].span.end_line,
                    st.refs[-1].span.end_column)
        parts["transfers"].append(Transfer(name=name, span=span, kind=kind.name, chain=st.refs,
                                           params=params))


def _input(r: Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("input", st.call, "input")
    if kind is None:
        return
    refs = tuple(a for a in st.call.args if isinstance(a, Ref))
    if len(refs) != len(st.call.args) or not refs:
        r.error("E301", "concat() takes the names of features or inputs", st.call.span)
        return
    parts["inputs"].append(Input(name=st.name, span=st.name_span, parts=refs))


def _net(r: Reader, st: Statement, what: str):
    """Read `mlp(input, widths...)`: the input reference and the network parameters."""
    kind = r.kind("net", st.call, what)
    if kind is None:
        return None, None
    source = ref_arg(st.call)
    if source is None:
        r.error("E306", f"{kind.name}() needs its input first, e.g. {kind.name}(x, 64)",
                st.call.span)
        return None, None
    params, _ = r.params(kind, st.call, skip=("input",))
    return source, (as_mlp(params) if params is not None else None)


def _experts(r: Reader, st: Statement, parts, fields) -> None:
    source, net = _net(r, st, "expert network")
    count = st.count.value if st.count is not None else 1
    if st.count is not None and not 1 <= count <= reg.MAX_EXPERTS:
        r.error("E301", f"an expert group has 1 to {reg.MAX_EXPERTS:,} experts, not {count:,}",
                st.count.span, "experts e[8] = mlp(x, 64): the count in square brackets")
        return
    if net is not None:
        parts["experts"].append(ExpertGroup(name=st.name, span=st.name_span, count=count,
                                            input=source, net=net))


def _tower(r: Reader, st: Statement, parts, fields) -> None:
    source, net = _net(r, st, "tower network")
    if net is not None:
        parts["towers"].append(Tower(name=st.name, span=st.name_span, input=source, net=net))


def _with_input(r: Reader, st: Statement, role: str, what: str):
    """Read `kind(input, ...)`: the input reference first, then the parameters."""
    kind = r.kind(role, st.call, what)
    if kind is None:
        return None, None, None
    source = ref_arg(st.call)
    if source is None:
        r.error("E306", f"{kind.name}() needs its input first, e.g. {kind.name}(x, ...)",
                st.call.span)
        return None, None, None
    params, _ = r.params(kind, st.call, skip=("input",))
    return kind, source, params


def _gate(r: Reader, st: Statement, parts, fields) -> None:
    kind, source, params = _with_input(r, st, "gate", "gate")
    if params is not None:
        parts["gates"].append(Gate(name=st.name, span=st.name_span, input=source,
                                   over=st.refs, params=params))


def _task(r: Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("task", st.call, "task")
    params = kind and r.params(kind, st.call)[0]
    if params is None:
        return
    label = kw_refs(st.call, "label")
    label_ref = label[0] if label else Ref(params.label, st.call.span)
    tower = st.refs[0] if st.expr is None else None
    where = kw_refs(st.call, "where")
    parts["tasks"].append(Task(name=st.name, span=st.name_span, kind=kind.name, params=params,
                               tower=tower, label=label_ref, product=st.expr,
                               where=where[0] if where else None))


def _extract(r: Reader, st: Statement, parts, fields) -> None:
    kind, source, params = _with_input(r, st, "extract", "template")
    if params is None:
        return
    if kind.name == "heac":
        outputs = {t: f"{st.name}.mix_{t}" for t in params.tasks}
    elif kind.name == "columns":
        outputs = {t: f"{st.name}.l{params.levels}.mix_{t}" for t in params.tasks}
    else:
        outputs = {t: f"{st.name}.l{params.levels}.gate_{t}" for t in params.tasks}
    parts["extracts"].append(Extract(name=st.name, span=st.name_span, kind=kind.name,
                                     input=source, params=params,
                                     task_refs=kw_refs(st.call, "tasks"), outputs=outputs))


_HANDLERS = {"model": _model, "data": _setting("data"), "weighting": _setting("weighting"),
             "train": _train, "feature": _feature, "label": _label, "input": _input,
             "experts": _experts, "tower": _tower, "gate": _gate, "task": _task,
             "extract": _extract, "transfer": _transfer}
