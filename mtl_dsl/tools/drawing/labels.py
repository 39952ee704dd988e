"""What the diagram says about each node and edge: a title, detail lines (widths, kinds,
options) and a note (who shares it), for every node kind of the task graph; the Graphviz
diagram (tools/drawing/graphviz.py) lays them out. Text only: no Graphviz, no torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...language import registry as reg
from ...language.syntax import show

if TYPE_CHECKING:  # the renderer needs only attribute access
    from ...language.graph import TaskGraph
    from ...language.ir import Spec


def shared_note(spec: Spec, tasks: frozenset[str]) -> str:
    ordered = [t.name for t in spec.tasks if t.name in tasks]
    if len(ordered) == len(spec.tasks) and len(ordered) > 3:
        return f"shared by all {len(ordered)} tasks"
    return "shared by " + ", ".join(ordered)


def count_of(graph: TaskGraph, name: str) -> int:
    """How many blocks one node stands for: shown as `×N` after its name."""
    return graph.g.nodes[name]["node"].count if graph.kind(name) in ("expert", "critics") else 1


Describer = Callable[["Spec", "TaskGraph", str, bool], tuple[str, list[str]]]


def _titled(lines_of: Callable[["Spec", "TaskGraph", Any], list[str]]) -> Describer:
    """A describer for a node with an IR node: its name (short inside a template's cluster)
    over the detail lines `lines_of` gives."""
    def describe(spec: Spec, graph: TaskGraph, name: str, in_cluster: bool
                 ) -> tuple[str, list[str]]:
        node = graph.g.nodes[name]["node"]
        return (_short(node) if in_cluster else name), lines_of(spec, graph, node)
    return describe


def _embedding(spec: Spec, graph: TaskGraph, name: str, in_cluster: bool
               ) -> tuple[str, list[str]]:
    table = name.split(":", 1)[1]
    feature = next((f for f in spec.features if f.name == table), None)
    if feature is None:
        return name, ["embedding table"]
    rows = feature.params.table_rows()  # None: sized by the data's vocabulary
    hashed = " (hashed)" if feature.params.hash is not None else ""
    return f"{table} table", [f"embedding {rows or 'auto'} × {feature.params.dim}{hashed}"]


def _critic_use(spec: Spec, graph: TaskGraph, name: str, in_cluster: bool
                ) -> tuple[str, list[str]]:
    critics, task = graph.critic_use_of(name)
    return f"{critics.rsplit('.', 1)[-1]} for {task}", []


def _feature(spec: Spec, graph: TaskGraph, node) -> list[str]:
    if node.kind == "dense":
        return [f"dense({node.params.size})"]
    share = f", shares {node.params.share}" if node.params.share else ""
    if node.kind == "sequence":
        return [f"sequence{share}", sequence_steps(node.params, graph.widths.get(node.name))]
    return [f"sparse → {node.params.dim}{share}"]


def _input(spec: Spec, graph: TaskGraph, node) -> list[str]:
    return [f"concat → {graph.widths.get(node.name, '?')}"]


ARROW = "→"  # between an MLP's widths: `mlp 100→16→8`


def _mlp(graph: TaskGraph, spec: Spec, source: str, net) -> list[str]:
    width = graph.widths.get(spec.resolve(source), "?")
    kind = "linear" if net.act == "none" and len(net.widths) == 1 else "mlp"
    lines = [f"{kind} " + ARROW.join(str(w) for w in (width, *net.widths))]
    extras = [x for x in (net.act if net.act not in ("relu", "none") else "",
                          f"dropout {net.dropout:g}" if net.dropout else "",
                          f"{net.norm} norm" if net.norm != "none" else "",
                          f"feature gate r={net.feature_gate}" if net.feature_gate else "") if x]
    return lines + ([" · ".join(extras)] if extras else [])


def width_in(line: str, index: int, text: str) -> str:
    """An MLP's line as `_mlp` writes it (`mlp 499→32`, `pepnet 44→64→32`) with its
    `index`th width (0: the first after the input's) written as `text` instead."""
    word, chain = line.split(" ", 1)
    parts = chain.split(ARROW)
    parts[index + 1] = text
    return f"{word} {ARROW.join(parts)}"


def _expert(spec: Spec, graph: TaskGraph, node) -> list[str]:
    return _mlp(graph, spec, node.input.name, node.net)


def _tower(spec: Spec, graph: TaskGraph, node) -> list[str]:
    lines = _mlp(graph, spec, node.input.name, node.net)
    if isinstance(node.net, reg.PepnetParams):  # PEPNet: EPNet with no widths, else PPNet
        kind = "EPNet" if not node.net.widths else "PPNet"
        lines = [lines[0].replace("mlp", "pepnet", 1).replace("linear", "pepnet", 1),
                 f"{kind} gates by {node.net.by}, γ={node.net.gamma:g}", *lines[1:]]
    return lines


def _critics(spec: Spec, graph: TaskGraph, node) -> list[str]:
    """MetaHeac's shared critics: each an MLP ending in one logit."""
    source = spec.resolve(node.inputs[0].name)
    widths = "→".join(str(w) for w in (graph.widths.get(source, "?"), *node.net.widths, 1))
    return [f"critics, mlp {widths}"]


def _gate(spec: Spec, graph: TaskGraph, node) -> list[str]:
    if graph.form(node.name) in ("stitch", "fusion"):
        return interaction_lines(spec, graph, node)
    if graph.form(node.name) == "dselect":  # DSelect-k: k binary selectors over the codes
        return dselect_lines(graph, node)
    t = node.params.temperature
    temp = f", T={t:g}" if t != 1.0 else ""
    critics = graph.form(node.name) == "critics"
    size = spec.node(node.over[0].name).count if critics else graph.experts_of(node)
    lines = [f"softmax {'critics' if critics else 'over'} {size}{temp}"]
    p = node.params
    extras = [f"top-{p.top_k} noisy" if p.top_k is not None else "",
              f"noise {p.noise:g}" if p.noise else "",
              f"balance {p.balance:g}" if p.balance else ""]
    if any(extras):
        lines.append(", ".join(e for e in extras if e))
    if graph.form(node.name) != "softmax":  # MetaHeac's gates read a task embedding
        lines.append(f"{node.task} embedding {node.task_embedding}"
                     + (" + input" if node.use_input else ""))
    if node.params.stop:  # STEM: mixed forward only
        lines.append(f"stop-gradient: {', '.join(node.params.stop)}")
    return lines


def _task(spec: Spec, graph: TaskGraph, node) -> list[str]:
    p = node.params
    args = node.label.name + (f", {p.classes}" if node.kind == "multiclass" else "")
    lines = [f"{node.kind}({args})"]
    if node.product is not None:
        lines.append(f"= {show(node.product)}")
    if p.where:
        lines.append(f"metrics where {p.where}")
    if p.weight != 1.0:
        lines.append(f"weight {p.weight:g}")
    return lines


# kind -> (spec, graph, name, in_cluster) -> (bold title, detail lines); one per graph.KINDS
DESCRIBE: dict[str, Describer] = {
    "embedding": _embedding, "feature": _titled(_feature), "input": _titled(_input),
    "expert": _titled(_expert), "gate": _titled(_gate), "tower": _titled(_tower),
    "critics": _titled(_critics), "critic_use": _critic_use, "task": _titled(_task)}


def _short(node) -> str:
    """In a template's cluster, whose label names the level: `p.l1.gate_a` -> `gate a`."""
    rest = node.name.removeprefix(f"{node.group}.") if node.group else node.name
    return rest.replace("gate_", "gate ") if rest.startswith("gate_") else rest



# ---- the wider architecture set: ESCM², DUPN, task columns, DSelect-k ----

def counterfactual_label(graph: TaskGraph, source: str) -> str:
    """ESCM²'s edge: its mode, weight and clip, and the DR imputation tower's widths."""
    t = next(t for t in graph.spec.transfers
             if t.kind == "counterfactual" and t.chain[0].name == source)
    p = t.params
    text = f" counterfactual {p.mode.upper()} λ={p.weight:g} clip={p.clip:g}"
    if p.mode == "dr":
        widths = ", ".join(map(str, p.imputation_net().widths))
        text += f"\n imputation mlp({widths})"
    return text


def sequence_steps(p, width: int | None) -> str:
    """DUPN: the encoder and pooling a sequence goes through, e.g. `lstm → attention(item) →
    16`."""
    steps = [] if p.encoder == "none" else [p.encoder]
    if isinstance(p.pool, str):
        steps.append(p.pool)
    else:
        steps.append(f"attention({p.pool.query or 'learnt query'}, w={p.pool.width})")
    return " → ".join([*steps, str(width if width is not None else p.dim)])


def interaction_lines(spec: Spec, graph: TaskGraph, node) -> list[str]:
    """A task-column interaction: cross-stitch's constants, or a fusion gate and its residual
    from the own group (the first listed)."""
    own, n = spec.resolve(node.over[0].name), graph.experts_of(node)
    if graph.form(node.name) == "stitch":
        return [f"cross-stitch over {n}", f"α own {node.params.own:g} ({own.rsplit('.', 1)[-1]})"]
    t = node.params.temperature
    lines = [f"fusion: softmax over {n}" + (f", T={t:g}" if t != 1.0 else "")]
    if node.params.residual != "none":
        kind = "self-gate" if node.params.residual == "gated" else "linear"
        lines.append(f"+ {kind} residual of {own.rsplit('.', 1)[-1]}")
    return lines


def dselect_lines(graph: TaskGraph, node) -> list[str]:
    p, n = node.params, graph.experts_of(node)
    bits = max(1, (n - 1).bit_length())
    lines = [f"dselect top-{p.k} of {n}", f"{p.k} selectors x {bits} smooth steps, γ={p.gamma:g}"]
    if p.entropy or p.balance:
        lines.append(", ".join(f"{k} {v:g}" for k, v in (("entropy", p.entropy),
                                                         ("balance", p.balance)) if v))
    return lines
