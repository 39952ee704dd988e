"""Every semantic check in one pass: all diagnostics at once, each at its span.

The compiler trusts a spec that passed here (plan, then apply): compiling a
validated spec never raises a spec error.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator

import networkx as nx

from . import registry as reg
from .ast_nodes import Ref
from .diagnostics import DataError, Diagnostic, Span, did_you_mean
from .graph import TaskGraph
from .ir import ExpertGroup, Gate, Spec, Task, Tower
from .sources import source_columns

Check = Callable[[Spec, TaskGraph], Iterator[Diagnostic]]

# What a reference may name, by where it appears.
REPRESENTATION = ("feature", "input", "expert", "gate", "tower")
HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "logloss": False, "mse": False, "mae": False}


def _where(span: Span) -> str:
    return f"line {span.line}"


def check_duplicates(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    first: dict[str, Span] = {}
    named = [*spec.nodes(), *spec.extracts]
    for node in named:
        if node.name in first and node.span != first[node.name]:
            yield Diagnostic("E202", f"'{node.name}' is declared twice", node.span,
                             f"the first declaration is at {_where(first[node.name])}")
        first.setdefault(node.name, node.span)
    counts = Counter(r.name for r in spec.labels)
    for ref in spec.labels:
        if counts[ref.name] > 1 and ref is not next(r for r in spec.labels if r.name == ref.name):
            yield Diagnostic("E202", f"label '{ref.name}' is declared twice", ref.span)


def _ref(spec: Spec, tg: TaskGraph, ref: Ref, allowed: tuple[str, ...], where: str
         ) -> Iterator[Diagnostic]:
    """An unknown name (with did-you-mean over names of the right kind), or a wrong kind."""
    name = spec.resolve(ref.name)
    kind = tg.kind(name)
    if kind is None and (name in spec.broken or name.split(".")[0] in spec.broken):
        return
    if kind is None:
        candidates = [n for n in tg.g.nodes if tg.kind(n) in allowed] + \
            [a for a in spec.aliases() if "gate" in allowed]
        hint = did_you_mean(ref.name, candidates)
        if hint and (decl := spec.node(hint.split("'")[1])) is not None:
            hint += f" (declared at {_where(decl.span)})"
        yield Diagnostic("E201", f"unknown name '{ref.name}' in {where}", ref.span, hint)
    elif kind not in allowed:
        yield Diagnostic("E203", f"'{ref.name}' is {_article(kind)} {kind}; {where} needs "
                         + " or ".join(_article(a) + " " + a for a in allowed), ref.span)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def check_references(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    for i in spec.inputs:
        for part in i.parts:
            yield from _ref(spec, tg, part, ("feature", "input"), f"input '{i.name}'")
    for e in spec.experts:
        yield from _ref(spec, tg, e.input, REPRESENTATION, f"experts '{e.name}'")
    for gate in spec.gates:
        yield from _ref(spec, tg, gate.input, REPRESENTATION, f"gate '{gate.name}'")
        for over in gate.over:
            yield from _ref(spec, tg, over, ("expert",), f"gate '{gate.name}'")
    for t in spec.towers:
        yield from _ref(spec, tg, t.input, REPRESENTATION, f"tower '{t.name}'")
    for task in spec.tasks:
        yield from _task_tower(spec, tg, task)
    for e in spec.extracts:
        yield from _ref(spec, tg, e.input, REPRESENTATION, f"{e.kind} '{e.name}'")
        for ref in e.task_refs:
            if ref.name not in tg.task_names:
                hint = did_you_mean(ref.name, tg.task_names)
                yield Diagnostic("E204", f"unknown task '{ref.name}' in {e.kind} '{e.name}'",
                                 ref.span, hint)
    for f in spec.features:
        if f.kind == "sparse" and f.params.share is not None:
            yield from _share(spec, f)


def _task_tower(spec: Spec, tg: TaskGraph, task: Task) -> Iterator[Diagnostic]:
    kind = tg.kind(spec.resolve(task.tower.name))
    if kind is None and task.tower.name in spec.broken:
        return
    if kind is None:
        towers = [t.name for t in spec.towers]
        yield Diagnostic("E201", f"unknown tower '{task.tower.name}' for task '{task.name}'",
                         task.tower.span, did_you_mean(task.tower.name, towers))
    elif kind != "tower":
        yield Diagnostic("E404", f"task '{task.name}' has no tower: '{task.tower.name}' is "
                         f"{_article(kind)} {kind}", task.tower.span,
                         f"add `tower t_{task.name} = mlp({task.tower.name}, 16)` and use "
                         f"`from t_{task.name}`")


def _share(spec: Spec, f) -> Iterator[Diagnostic]:
    index = {x.name: x for x in spec.features}
    other = index.get(f.params.share)
    if other is None or other.kind != "sparse":
        sparse = [x.name for x in spec.features if x.kind == "sparse" and x.name != f.name]
        yield Diagnostic("E208", f"feature '{f.name}' shares the table of '{f.params.share}', "
                         "which is not a sparse feature", f.span,
                         did_you_mean(f.params.share, sparse))
    elif other.params.dim != f.params.dim:
        yield Diagnostic("E208", f"feature '{f.name}' shares the table of '{other.name}' but "
                         f"asks for dim={f.params.dim}, the table has dim={other.params.dim}",
                         f.span, f"set dim={other.params.dim} or drop share=")
    elif other.params.share is not None:
        yield Diagnostic("E208", f"'{other.name}' shares a table itself; share the owner's",
                         f.span, f"use share={other.params.share}")


def check_cycles(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    for cycle in nx.simple_cycles(tg.g):
        # start at the block declared first, so the message does not depend on hash order
        spans = [(spec.node(n).span.line, spec.node(n).span.column) if spec.node(n) else (1e9, 0)
                 for n in cycle]
        first = spans.index(min(spans))
        cycle = cycle[first:] + cycle[:first]
        node = spec.node(cycle[0])
        path = " -> ".join([*cycle, cycle[0]])
        yield Diagnostic("E401", f"cycle in the model: {path}", node.span if node else None,
                         "a block cannot read its own output")
        return  # one cycle is enough to fix first; widths are meaningless until then


def check_gates(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    if not nx.is_directed_acyclic_graph(tg.g):
        return
    widths = tg.widths
    for gate in spec.gates:
        groups = [spec.resolve(r.name) for r in gate.over]
        dup = [n for n, c in Counter(groups).items() if c > 1]
        for name in dup:
            yield Diagnostic("E402", f"gate '{gate.name}' lists '{name}' twice", gate.span)
        known = [(r, spec.resolve(r.name)) for r in gate.over if tg.kind(spec.resolve(r.name))
                 == "expert"]
        sizes = {n: widths.get(n) for _, n in known}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{n}: {w}" for n, w in sizes.items())
            yield Diagnostic("E402", f"gate '{gate.name}' mixes experts of different output "
                             f"widths ({shown})", gate.span,
                             "experts mixed by one gate must end with the same width")


def check_flow(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """Every block must reach a task; unused declarations are warnings."""
    if not spec.tasks and not spec.broken:
        yield Diagnostic("E405", "the spec declares no task", None,
                         "add e.g. `task ctr: binary(label=click) from t_ctr`")
    for node in [*spec.experts, *spec.gates, *spec.towers]:
        downstream = nx.descendants(tg.g, node.name) | {node.name}
        if not tg.tasks_of.get(node.name) and not downstream & spec.broken_refs:
            if isinstance(node, Tower):
                yield Diagnostic("E403", f"tower '{node.name}' feeds no task", node.span,
                                 f"add `task NAME: binary(label=...) from {node.name}`")
            elif not getattr(node, "group", None):
                kind = "expert group" if isinstance(node, ExpertGroup) else "gate"
                yield Diagnostic("W003", f"{kind} '{node.name}' feeds no task", node.span,
                                 severity="warning")
    for node in spec.experts:
        readers = [v for v in tg.g.successors(node.name) if tg.kind(v) != "gate"]
        if node.count > 1 and readers:
            yield Diagnostic("E406", f"'{readers[0]}' reads expert group '{node.name}' of "
                             f"{node.count} experts directly", node.span,
                             f"mix them with a gate: `gate g = softmax(x) over {node.name}`")
    for f in spec.features:
        if not tg.tasks_of.get(f.name) and spec.tasks and f.name not in spec.broken_refs:
            yield Diagnostic("W002", f"feature '{f.name}' is not used by any task", f.span,
                             severity="warning")


def check_tasks(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    labels = [r.name for r in spec.labels]
    for task in spec.tasks:
        if task.label.name not in labels:
            hint = did_you_mean(task.label.name, labels) or \
                f"declare it: `label {task.label.name}`"
            yield Diagnostic("E206", f"unknown label '{task.label.name}' in task '{task.name}'",
                             task.label.span, hint)
        allowed = reg.TASK_METRICS[task.kind]
        for m in task.params.metrics:
            if m not in allowed:
                yield Diagnostic("E302", f"metric '{m}' does not apply to {task.kind} task "
                                 f"'{task.name}'", task.span,
                                 f"{task.kind} tasks report: {', '.join(sorted(allowed))}")
    used = {t.label.name for t in spec.tasks}
    for ref in spec.labels:
        if ref.name not in used and ref.name not in spec.broken_refs:
            yield Diagnostic("W001", f"label '{ref.name}' is not used by any task", ref.span,
                             severity="warning")


def check_settings(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    train = spec.train.params
    if train.monitor is not None:
        yield from _monitor(spec, train.monitor)
    if train.patience is not None and train.monitor is None:
        yield Diagnostic("E207", "patience= needs monitor=TASK.METRIC to know what to watch",
                         spec.train.arg_spans.get("patience", spec.train.span))
    method = spec.weighting.kind
    if method in ("uncertainty", "gradnorm") and len(spec.tasks) < 2:
        yield Diagnostic("E601", f"{method} weighting balances several tasks; this spec has "
                         f"{len(spec.tasks)}", spec.weighting.span, "use `weighting fixed`")
    elif method == "gradnorm" and spec.tasks and not tg.last_shared:
        yield Diagnostic("E601", "gradnorm needs parameters shared by the tasks; no block here "
                         "feeds more than one task", spec.weighting.span,
                         "share experts or a bottom between towers, or use `weighting fixed`")


def _monitor(spec: Spec, monitor: str) -> Iterator[Diagnostic]:
    span = spec.train.arg_spans.get("monitor", spec.train.span)
    task_name, _, metric = monitor.partition(".")
    names = [t.name for t in spec.tasks]
    if task_name not in names:
        yield Diagnostic("E207", f"monitor names unknown task '{task_name}'", span,
                         did_you_mean(task_name, names) or "write monitor=TASK.METRIC")
        return
    metrics = spec.task(task_name).params.metrics
    if metric not in metrics:
        yield Diagnostic("E207", f"task '{task_name}' does not report '{metric}'", span,
                         f"it reports: {', '.join(metrics)}")


def check_data(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """Label and feature columns must exist in the data source (read from its header)."""
    if spec.data is None:
        yield Diagnostic("E501", "the spec names no data source", None,
                         "add `data synthetic.correlated(rows=20000)` or `data csv(\"f.csv\")`, "
                         "or pass --data")
        return
    try:
        columns = set(source_columns(spec.data, spec.base_dir))
    except DataError as err:
        for d in err.diagnostics:
            yield Diagnostic("E502", d.message, spec.data.span, d.hint)
        return
    for ref in spec.labels:
        if ref.name not in columns:
            yield Diagnostic("E503", f"label column '{ref.name}' is not in the data", ref.span,
                             did_you_mean(ref.name, columns) or _columns_hint(columns))
    for f in spec.features:
        missing = [c for c in f.columns if c not in columns]
        if missing:
            yield Diagnostic("E504", f"feature '{f.name}' reads column '{missing[0]}', which is "
                             "not in the data" + (f" ({len(missing)} missing)" if
                                                  len(missing) > 1 else ""), f.span,
                             did_you_mean(missing[0], columns) or _columns_hint(columns))
    leaked = {r.name for r in spec.labels} & {c for f in spec.features for c in f.columns}
    for f in spec.features:
        for c in f.columns:
            if c in leaked:
                yield Diagnostic("E505", f"feature '{f.name}' reads label column '{c}'", f.span,
                                 "a label used as an input leaks the answer into the model")


def _columns_hint(columns: set[str]) -> str:
    shown = sorted(columns)
    more = f", ... ({len(shown)} in all)" if len(shown) > 8 else ""
    return "the data has: " + ", ".join(shown[:8]) + more


CHECKS: tuple[Check, ...] = (check_duplicates, check_references, check_cycles, check_gates,
                             check_flow, check_tasks, check_settings, check_data)


def validate(spec: Spec, tg: TaskGraph | None = None) -> list[Diagnostic]:
    """Run every check; the diagnostics come sorted by position."""
    tg = tg or TaskGraph(spec)
    found = [d for check in CHECKS for d in check(spec, tg)]
    return sorted(found, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
