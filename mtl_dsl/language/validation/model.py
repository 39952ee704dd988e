"""The checks of the network's statements: names, references, cycles, gates, the flow from
features to tasks, tasks, products and transfers."""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator

from .. import registry as reg
from ..syntax import Ref
from ..diagnostics import Diagnostic, Span, did_you_mean, suggest
from ..graph import TaskGraph
from ..ir import ExpertGroup, Gate, Spec, Task, Tower

Check = Callable[[Spec, TaskGraph], Iterator[Diagnostic]]

# What a reference may name, by where it appears.
REPRESENTATION = ("feature", "input", "expert", "gate", "tower")


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
    labels: set[str] = set()
    for ref in spec.labels:
        if ref.name in labels:
            yield Diagnostic("E202", f"label '{ref.name}' is declared twice", ref.span)
        labels.add(ref.name)


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
        hint, fix = suggest(ref.name, candidates, ref.span)
        if fix and (decl := spec.node(fix.text)) is not None:
            hint += f" (declared at {_where(decl.span)})"
        yield Diagnostic("E201", f"unknown name '{ref.name}' in {where}", ref.span, hint,
                         fix=fix)
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
        mixed = ("critics",) if gate.mixes == "critics" else ("expert",)
        for over in gate.over:
            yield from _ref(spec, tg, over, mixed, f"gate '{gate.name}'")
    for t in spec.towers:
        yield from _ref(spec, tg, t.input, REPRESENTATION, f"tower '{t.name}'")
        if isinstance(t.net, reg.PepnetParams):
            yield from _prior(spec, tg, t)
    for g in spec.gates:  # STEM: a softmax gate mixes forward only groups it mixes
        if isinstance(g.params, reg.SoftmaxGateParams):
            yield from _stops(spec, g)
    for e in spec.experts:  # PEPNet's gates read a second input: only a tower has one
        if isinstance(e.net, reg.PepnetParams):
            yield Diagnostic("E432", f"experts '{e.name}' use pepnet(...), whose gates "
                             "read a prior; only a tower takes one", e.span,
                             f"write `tower {e.name} = pepnet(...)` or use mlp(...) here")
    for task in spec.tasks:
        if task.tower is not None:
            yield from _task_tower(spec, tg, task)
    for e in spec.extracts:
        yield from _ref(spec, tg, e.input, REPRESENTATION, f"{e.kind} '{e.name}'")
        for ref in e.task_refs:
            if ref.name not in tg.task_names:
                hint, fix = suggest(ref.name, tg.task_names, ref.span)
                yield Diagnostic("E204", f"unknown task '{ref.name}' in {e.kind} '{e.name}'",
                                 ref.span, hint, fix=fix)
    for f in spec.features:
        if f.embedded and f.params.share is not None:
            yield from _share(spec, f)
        if f.query is not None:
            yield from _query(spec, f)


def _stops(spec: Spec, g: Gate) -> Iterator[Diagnostic]:
    """STEM: `stop=` names expert groups that this gate mixes."""
    over = [spec.resolve(r.name) for r in g.over]
    for name in g.params.stop:
        if spec.resolve(name) not in over or g.mixes == "critics" or g.task_embedding:
            yield Diagnostic("E433", f"gate '{g.name}' stops the gradient of '{name}', which "
                             "it does not mix", g.span,
                             f"stop= lists groups this gate mixes: {', '.join(over)}")


def _prior(spec: Spec, tg: TaskGraph, t) -> Iterator[Diagnostic]:
    """PEPNet: `by=` names a representation (a feature, input, expert, gate or tower)."""
    if tg.kind(spec.resolve(t.net.by)) not in REPRESENTATION:
        names = [n.name for n in spec.nodes() if tg.kind(n.name) in REPRESENTATION]
        yield Diagnostic("E432", f"tower '{t.name}' is gated by '{t.net.by}', which is not a "
                         "feature, input, expert group, gate or tower", t.span,
                         did_you_mean(t.net.by, names) or "name the prior, e.g. an input "
                         "`input prior = concat(user, item)`")


def _query(spec: Spec, f) -> Iterator[Diagnostic]:
    """DUPN: a sequence's attention is queried by a sparse feature's embedding."""
    sparse = [g.name for g in spec.features if g.kind == "sparse"]
    if f.query not in sparse:
        yield Diagnostic("E431", f"sequence '{f.name}' pools by attention queried by "
                         f"'{f.query}', which is not a sparse feature", f.span,
                         did_you_mean(f.query, sparse) or "name a sparse(...) feature, e.g. "
                         "the item, or drop query= for a learnt query")


def _task_tower(spec: Spec, tg: TaskGraph, task: Task) -> Iterator[Diagnostic]:
    kind = tg.kind(spec.resolve(task.tower.name))
    if kind is None and task.tower.name in spec.broken:
        return
    if spec.declared(task.tower.name) > 1:
        return  # declared twice: E202 says so, and which one the task means is unknown
    node = spec.node(task.tower.name)
    if kind == "gate" and isinstance(node, Gate) and node.mixes == "critics":
        if node.task != task.name:
            yield Diagnostic("E418", f"task '{task.name}' reads the critic gate of task "
                             f"'{node.task}'", task.tower.span,
                             f"write `from {task.tower.name.rsplit('.', 1)[0]}.{task.name}`")
        return
    if kind is None:
        towers = [t.name for t in spec.towers]
        hint, fix = suggest(task.tower.name, towers, task.tower.span)
        yield Diagnostic("E201", f"unknown tower '{task.tower.name}' for task '{task.name}'",
                         task.tower.span, hint, fix=fix)
    elif kind != "tower":
        yield Diagnostic("E404", f"task '{task.name}' has no tower: '{task.tower.name}' is "
                         f"{_article(kind)} {kind}", task.tower.span,
                         f"add `tower t_{task.name} = mlp({task.tower.name}, 16)` and use "
                         f"`from t_{task.name}`")


def _share(spec: Spec, f) -> Iterator[Diagnostic]:
    index = {x.name: x for x in spec.features}
    other = index.get(f.params.share)
    if other is None or not other.embedded:
        sparse = [x.name for x in spec.features if x.embedded and x.name != f.name]
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
    if tg.acyclic:
        return
    import networkx as nx  # on a cyclic spec only (language/graph.py says why)

    for cycle in nx.simple_cycles(tg.nx):
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
    if not tg.acyclic:
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
        if len(known) == len(groups):
            yield from _selection(gate, tg.experts_of(gate))


def _selection(gate, n: int) -> Iterator[Diagnostic]:
    """E430: a gate keeps or selects more experts than it mixes (top_k=, dselect k=), or a
    DSelect-k gate has fewer than two experts to select from."""
    p = gate.params
    if not isinstance(p, (reg.DSelectGateParams, reg.SoftmaxGateParams)):
        return  # stitch and fusion gates mix every expert they list
    k, what = (p.k, "dselect(k=...)") if isinstance(p, reg.DSelectGateParams) else \
        (p.top_k, "softmax(top_k=...)") if isinstance(p, reg.SoftmaxGateParams) else (None, "")
    if isinstance(p, reg.DSelectGateParams) and n < 2:
        yield Diagnostic("E430", f"dselect gate '{gate.name}' has {n} expert to select from",
                         gate.span, "DSelect-k selects among two or more experts")
    elif k is not None and k > n:
        yield Diagnostic("E430", f"gate '{gate.name}' selects {k} experts but mixes only {n}",
                         gate.span, f"give {what} at most {n}")


def check_flow(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """Every block must reach a task; unused declarations are warnings."""
    if not spec.tasks and not spec.broken:
        yield Diagnostic("E405", "the spec declares no task", None,
                         "add e.g. `task ctr: binary(label=click) from t_ctr`")
    # loss=none tasks count (see E417); one backward search each, not one per block
    feeds = tg.reaching({t.name for t in spec.tasks} | spec.broken_refs)
    for node in [*spec.experts, *spec.gates, *spec.towers]:
        if node.name not in feeds:
            if isinstance(node, Tower):
                yield Diagnostic("E403", f"tower '{node.name}' feeds no task", node.span,
                                 f"add `task NAME: binary(label=...) from {node.name}`")
            elif not node.group:  # a template's nodes: the template is used
                kind = "expert group" if isinstance(node, ExpertGroup) else "gate"
                yield Diagnostic("W003", f"{kind} '{node.name}' feeds no task", node.span,
                                 severity="warning")
    gate_inputs: dict[str, list[str]] = {}
    for g in spec.gates:
        gate_inputs.setdefault(spec.resolve(g.input.name), []).append(g.name)
    for node in spec.experts:
        # a gate mixes a group's experts; anything else, a gate's input included, would
        # read the (B, n, D) group as one vector
        readers = [v for v in tg.g.successors(node.name) if tg.kind(v) != "gate"] + \
            gate_inputs.get(node.name, [])
        if node.count > 1 and readers:
            yield Diagnostic("E406", f"'{readers[0]}' reads expert group '{node.name}' of "
                             f"{node.count} experts directly", node.span,
                             f"mix them with a gate: `gate g = softmax(x) over {node.name}`")
    for f in spec.features:
        if not tg.tasks_of.get(f.name) and spec.tasks and f.name not in spec.broken_refs:
            yield Diagnostic("W002", f"feature '{f.name}' is not used by any task", f.span,
                             severity="warning")


def _label_ref(spec: Spec, ref: Ref, where: str) -> Iterator[Diagnostic]:
    labels = spec.label_names
    if ref.name not in labels:
        hint, fix = suggest(ref.name, labels, ref.span)
        yield Diagnostic("E206", f"unknown label '{ref.name}' in {where}", ref.span,
                         hint or f"declare it: `label {ref.name}`", fix=fix)


def check_tasks(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    for task in spec.tasks:
        yield from _label_ref(spec, task.label, f"task '{task.name}'")
        if task.where is not None:
            yield from _label_ref(spec, task.where, f"where= of task '{task.name}'")
        allowed = reg.TASK_METRICS[task.kind]
        for m in task.params.metrics:
            if reg.metric_family(m) not in reg.METRICS:
                yield Diagnostic("E302", f"unknown metric '{m}' for {task.kind} task "
                                 f"'{task.name}'", task.span,
                                 " ".join(filter(None, (did_you_mean(m, allowed),
                                      f"{task.kind} tasks report: {', '.join(sorted(allowed))}"))))
            elif reg.metric_family(m) not in allowed:
                yield Diagnostic("E302", f"metric '{m}' does not apply to {task.kind} task "
                                 f"'{task.name}'", task.span,
                                 f"{task.kind} tasks report: {', '.join(sorted(allowed))}")
    used = {t.label.name for t in spec.tasks} | {t.where.name for t in spec.tasks if t.where} | \
        {r.name for d in spec.derived_labels for r in d.refs} | \
        {spec.data.params.stratify if spec.data is not None and
         isinstance(spec.data.params, reg.FileSource) else None}
    for ref in [*spec.labels, *spec.derived_labels]:
        if ref.name not in used and ref.name not in spec.broken_refs:
            yield Diagnostic("W001", f"label '{ref.name}' is not used by any task", ref.span,
                             severity="warning")


def check_products(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """Products over the entire space combine binary tasks' probabilities into a binary task."""
    fed = tg.reached({f.name for f in spec.features})
    for task in spec.tasks:
        if task.product is None:
            continue
        if task.kind != "binary":
            yield Diagnostic("E415", f"product task '{task.name}' must be binary: it is a "
                             "probability", task.span, f"write `task {task.name}: binary(...)`")
        for ref in task.factors:
            kind = tg.kind(ref.name)
            if kind != "task":
                hint, fix = suggest(ref.name, tg.task_names, ref.span)
                yield Diagnostic("E204", f"unknown task '{ref.name}' in the product of "
                                 f"'{task.name}'", ref.span, hint, fix=fix)
            elif spec.task(ref.name).kind != "binary":
                yield Diagnostic("E415", f"product '{task.name}' multiplies '{ref.name}', a "
                                 f"{spec.task(ref.name).kind} task; products combine binary "
                                 "tasks' probabilities", ref.span)
            elif ref.name not in fed:
                yield Diagnostic("E416", f"factor '{ref.name}' of '{task.name}' is not computed "
                                 "from any input feature", ref.span,
                                 "give it a tower that reads the features")
    for task in spec.tasks:
        if not task.has_loss and not any(tg.kind(v) == "task" for v in tg.g.successors(task.name)):
            yield Diagnostic("E417", f"task '{task.name}' has loss=none but no product or "
                             "transfer uses it, so nothing trains it", task.span,
                             f"use it in a product, e.g. `task x: binary(label=...) = "
                             f"other * {task.name}`, or drop loss=none")


def check_transfers(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """A transfer chain is an ordered path of distinct binary tasks with towers."""
    incoming: dict[str, str] = {}
    for tr in spec.transfers:
        names = [r.name for r in tr.chain]
        if len(names) < 2:
            yield Diagnostic("E410", f"{tr.kind} on '{names[0]}' has no previous step",
                             tr.span, f"write the chain: `transfer earlier -> {names[0]} = "
                             f"{tr.kind}(...)`")
        seen = set()
        for ref in tr.chain:
            if ref.name in seen:
                yield Diagnostic("E411", f"task '{ref.name}' appears twice in the chain "
                                 f"{tr.name}", ref.span, "a chain is an ordered path")
            seen.add(ref.name)
            if tg.kind(ref.name) != "task":
                hint, fix = suggest(ref.name, tg.task_names, ref.span)
                yield Diagnostic("E204", f"unknown task '{ref.name}' in transfer {tr.name}",
                                 ref.span, hint, fix=fix)
                continue
            task = spec.task(ref.name)
            if task.kind != "binary":
                yield Diagnostic("E412", f"'{ref.name}' is a {task.kind} task; {tr.kind} "
                                 "compares step probabilities, so chain tasks are binary",
                                 ref.span)
            elif tr.kind == "ait" and task.tower is None:
                yield Diagnostic("E412", f"'{ref.name}' has no tower; an AIT step needs "
                                 "one", ref.span)
            elif tr.kind == "counterfactual" and task.tower is None:
                yield Diagnostic("E412", f"'{ref.name}' has no tower; ESCM²'s counterfactual "
                                 "risk reads a task's own output", ref.span)
        if tr.kind == "counterfactual" and len(names) > 2:
            yield Diagnostic("E434", f"counterfactual pairs a CTR task with a CVR task, but "
                             f"{tr.name} has {len(names)} tasks", tr.chain[2].span,
                             f"write `transfer {names[0]} -> {names[1]} = counterfactual(...)`")
        if tr.kind == "ait":
            for (a, b), ref in zip(tr.edges, tr.chain[1:]):
                if b in incoming:
                    yield Diagnostic("E414", f"task '{b}' already receives a transfer from "
                                     f"'{incoming[b]}'", ref.span,
                                     "an AIT step has one previous step, given once")
                incoming[b] = a
            yield from _ait_widths(spec, tg, tr)


def _ait_widths(spec: Spec, tg: TaskGraph, tr) -> Iterator[Diagnostic]:
    """h1..h3 act on both p_(t-1) and q_t, so the transfer MLP must end at q_t's width."""
    if tr.params.transfer is None or not tr.params.transfer.widths:
        return
    out = tr.params.transfer.widths[-1]
    for ref in tr.chain[1:]:
        task = spec.index().get(ref.name)
        if not isinstance(task, Task) or task.tower is None:
            continue
        width = tg.widths.get(spec.resolve(task.tower.name)) if tg.acyclic else None
        if width is not None and width != out:
            yield Diagnostic("E413", f"the transfer MLP of {tr.name} ends at width {out}, but "
                             f"the tower of task '{ref.name}' gives {width}", ref.span,
                             f"end transfer=mlp(...) with {width}, the tower width")


MODEL_CHECKS: tuple[Check, ...] = (check_duplicates, check_references, check_cycles,
                                   check_gates, check_flow, check_tasks, check_products,
                                   check_transfers)
