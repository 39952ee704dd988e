"""How big a spec's model is, from the IR and the graph alone (no torch): its parameter count
and an estimate of the memory training it takes, so that `mtl check` can report both and
refuse a model over a cap (E419) before anything is allocated.

The counts follow the blocks the compiler builds (docs/architectures.md): an MLP's Linear
layers and norms, expert groups of `count` such MLPs, softmax gates over their experts,
task heads, AIT transfers, MetaHeac's task gates and critics, and the embedding tables
(`SparseParams.table_rows()`; a `vocab=auto` table is sized by the data and left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import registry as reg
from .diagnostics import Diagnostic
from .graph import TaskGraph, table_of
from .ir import Critics, ExpertGroup, Gate, Spec, Task

# Bytes per parameter while training with Adam: the float32 weight, its gradient and the
# optimiser's two moments.
TRAIN_BYTES_PER_PARAM = 16
# Activations kept for the backward pass, per output unit of a node and per row: the
# output, and about as much again for norms, activations and dropout masks (float32).
ACTIVATION_BYTES = 8


@dataclass(frozen=True)
class Size:
    """A model's size: `params` counted from the spec; `by_data` names the embedding tables
    (vocab=auto) whose rows the data decides, which the count leaves out."""

    params: int
    by_data: tuple[str, ...]
    activations_per_row: int
    batch: int

    @property
    def training_bytes(self) -> int:
        """Weights, gradients and Adam's moments, plus one batch's activations."""
        return self.params * TRAIN_BYTES_PER_PARAM + \
            self.activations_per_row * self.batch * ACTIVATION_BYTES

    def describe(self) -> str:
        """`1,234,567 parameters, training needs about 0.1 GB at batch 256`."""
        tables = f" (+ tables sized by the data: {', '.join(self.by_data[:5])}" + \
            (f", ... {len(self.by_data)} in all" if len(self.by_data) > 5 else "") + ")" \
            if self.by_data else ""
        return (f"{self.params:,} parameters{tables}; training needs about "
                f"{_gigabytes(self.training_bytes)} at batch {self.batch:,}")


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def mlp_params(in_dim: int, net: reg.MLPParams) -> int:
    """Linear layers (weight and bias) and, with norm=batch|layer, two per unit; a feature
    gate of rank r adds its A (in x r) and B (r x in), no biases."""
    total = 2 * in_dim * net.feature_gate
    for width in net.widths:
        total += in_dim * width + width + (2 * width if net.norm != "none" else 0)
        in_dim = width
    return total


def model_size(spec: Spec, tg: TaskGraph) -> Size:
    """The parameter count and the activations per row of a spec whose graph is acyclic."""
    w = tg.widths
    used = {n for n, tasks in tg.tasks_of.items() if tasks}  # what the compiler builds
    acts = sum(e.count * sum(e.net.widths) for e in spec.experts if e.name in used)
    acts += sum(max(1, tg.experts_of(g)) + w.get(g.name, 0) for g in spec.gates if g.name in used)
    acts += sum(sum(t.net.widths) for t in spec.towers if t.name in used)
    acts += sum(len(c.tasks) * c.count * (sum(c.net.widths) + 1) for c in spec.critics
                if c.name in used)
    acts += sum(t.out_dim for t in spec.tasks if t.name in used)
    acts += sum(f.width for f in spec.features if f.name in used)
    return Size(sum(block_params(spec, tg).values()), _tables(spec, used)[1], acts,
                spec.train.params.batch)


def block_params(spec: Spec, tg: TaskGraph) -> dict[str, int]:
    """The parameters of each block the compiler builds (a spec whose graph is acyclic): expert
    groups, gates, towers, critics and task heads by their names, an AIT step's transfer by its
    edge (`prev->next`, as the compiler keys it), a feature's
    sequence encoder and its embedding table (a `vocab=auto` table is sized by the data and
    left out) by the feature's name, ESCM²'s imputation tower by its transfer's. The model's
    count is their sum; an editor shows each (language/analysis.py)."""
    w = tg.widths

    def width_of(name: str) -> int:
        return w.get(spec.resolve(name), 0)

    used = {n for n, tasks in tg.tasks_of.items() if tasks}  # what the compiler builds
    out: dict[str, int] = {}

    def add(name: str, n: int) -> None:
        out[name] = out.get(name, 0) + n

    for e in (e for e in spec.experts if e.name in used):
        add(e.name, e.count * mlp_params(width_of(e.input.name), e.net))
    for gate in (g for g in spec.gates if g.name in used):
        add(gate.name, _gate_params(spec, tg, gate, width_of(gate.input.name)))
    for t in (t for t in spec.towers if t.name in used):
        add(t.name, mlp_params(width_of(t.input.name), t.net))
        if isinstance(t.net, reg.PepnetParams):  # PEPNet's GateNUs, one per layer
            n_in, n_by = width_of(t.input.name), width_of(t.net.by)
            add(t.name, sum((n_by + n_in) * w + w + w * w + w for w in t.net.widths or (n_in,)))
    for c in (c for c in spec.critics if c.name in used):
        add(c.name, _critics_params(c, width_of(c.inputs[0].name) if c.inputs else 0))
    for task in (t for t in spec.tasks if t.name in used):
        form = tg.form(task.name)
        if form == "head":
            add(task.name, width_of(task.tower.name) * task.out_dim + task.out_dim)
        elif form == "ait":  # the head on z; the step's transfer by its edge, `prev->next`
            k, transfer = _ait_step(spec, task.name, width_of)
            add(task.name, k * task.out_dim + task.out_dim)
            add(_came_from(spec, task.name) + "->" + task.name, transfer)
        else:
            add(task.name, 0)
    for name, n in _imputation_params(spec, tg, width_of).items():
        add(name, n)
    for name, n in _sequence_params(spec, used).items():
        add(name, n)
    for name, n in _tables(spec, used)[0].items():
        add(name, n)
    return out


def _sequence_params(spec: Spec, used: set[str]) -> dict[str, int]:
    """DUPN's sequence encoders (model/sequences.py): a GRU (3 gates) or LSTM (4) of hidden
    width d over d-wide embeddings or a causal Transformer layer, and the attention's W, b, U
    and v."""
    index, total = {f.name: f for f in spec.features}, {}
    for f in (f for f in spec.features if f.kind == "sequence" and f.name in used):
        owner = index.get(table_of(spec, f))
        d = owner.params.dim if owner is not None and owner.params.dim else f.width
        gates = {"gru": 3, "lstm": 4}.get(f.params.encoder, 0)
        total[f.name] = gates * (2 * d * d + 2 * d)
        if f.params.encoder == "transformer":  # P, qkv, W_o, two norms, the 2d-wide FFN
            total[f.name] += f.params.max_len * d + 8 * d * d + 11 * d
        pool = f.params.pool
        if isinstance(pool, reg.AttentionPoolParams):
            q = index[f.query].width if f.query in index else 0
            total[f.name] += d * pool.width + pool.width + q * pool.width + pool.width
    return total


def _imputation_params(spec: Spec, tg: TaskGraph, width_of) -> dict[str, int]:
    """ESCM²'s DR imputation towers: an MLP over what the CVR tower reads, and a scalar
    output (model/counterfactual.py builds the same)."""
    total: dict[str, int] = {}
    for t in spec.transfers:
        if t.kind != "counterfactual" or t.params.mode != "dr" or len(t.chain) != 2:
            continue
        task = spec.index().get(t.chain[1].name)
        if not isinstance(task, Task) or task.tower is None:
            continue
        source = spec.resolve(task.tower.name)
        if tg.kind(source) == "tower":
            source = spec.resolve(spec.node(source).input.name)
        net = t.params.imputation_net()
        last = net.widths[-1] if net.widths else width_of(source)
        total[t.name] = total.get(t.name, 0) + mlp_params(width_of(source), net) + last + 1
    return total


def _gate_params(spec: Spec, tg: TaskGraph, gate: Gate, in_dim: int) -> int:
    if gate.mixes == "critics":
        critics = next((c for c in spec.critics if c.name == spec.resolve(gate.over[0].name)),
                       None) if gate.over else None
        n = critics.count if critics is not None else 0
    else:
        n = tg.experts_of(gate)
    form = tg.form(gate.name)
    if form in ("stitch", "fusion"):  # task-column interactions (model/interactions.py)
        return _interaction_params(spec, gate, in_dim, n)
    if isinstance(gate.params, reg.DSelectGateParams):  # Z: in -> k*ceil(log2 n), A: in -> k
        out = gate.params.k * (max(1, math.ceil(math.log2(max(n, 1)))) + 1)
        return in_dim * out + out
    if gate.task_embedding is None:  # a noisy top-k gate has a second (noise) projection
        return (in_dim * n + n) * (2 if gate.params.top_k is not None else 1)
    d = gate.task_embedding + (in_dim if gate.use_input else 0)
    return gate.task_embedding + d * n + n


def _interaction_params(spec: Spec, gate: Gate, in_dim: int, n: int) -> int:
    """Cross-stitch's n constants; a fusion gate's softmax and its residual's weights."""
    if isinstance(gate.params, reg.StitchGateParams):
        return n
    own = spec.node(gate.over[0].name)
    m = own.count if isinstance(own, ExpertGroup) else 0
    residual = {"linear": m if m > 1 else 0, "gated": in_dim * m + m, "none": 0}
    return in_dim * n + n + residual[gate.params.residual]


def _critics_params(c: Critics, in_dim: int) -> int:
    width = c.net.widths[-1] if c.net.widths else in_dim
    return c.count * (mlp_params(in_dim, c.net) + width + 1)


def _came_from(spec: Spec, name: str) -> str:
    """The task an AIT step into `name` comes from (the last edge into it, as the compiler)."""
    return {b: a for t in spec.transfers if t.kind == "ait" for a, b in t.edges}[name]


def _ait_step(spec: Spec, name: str, width_of) -> tuple[int, int]:
    """AITM's step into task `name`: (k, the parameters of its transfer): the flow MLP g from
    the previous step's z and the attention's h1, h2, h3 on the tower's width q. Edges are
    read as the compiler reads them (the last edge into a task, the first statement naming
    it)."""
    ait = [t for t in spec.transfers if t.kind == "ait"]
    came_from = {b: a for t in ait for a, b in t.edges}

    def edge(a: str, b: str):
        return next(t for t in ait if (a, b) in t.edges)

    prev = came_from[name]
    step = edge(prev, name)
    before = came_from.get(prev)
    z = edge(before, prev).params.k if before is not None else \
        width_of(spec.task(prev).tower.name)
    q, k = width_of(spec.task(name).tower.name), step.params.k
    net = step.params.transfer or reg.MLPParams(widths=(q,))
    return k, mlp_params(z, net) + 3 * (q * k + k)


def _tables(spec: Spec, used: set[str]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Rows x dim of every table a used feature reads, by its owner; the owners whose rows the
    data decides."""
    owners = {table_of(spec, f) for f in spec.features if f.embedded and f.name in used}
    sizes, by_data = {}, []
    for f in spec.features:
        if f.name in owners and f.embedded:
            rows = f.params.table_rows()
            if rows is None:
                by_data.append(f.name)
            else:
                sizes[f.name] = sizes.get(f.name, 0) + rows * (f.params.dim or
                                                               reg.DEFAULT_EMBEDDING_DIM)
    return sizes, tuple(by_data)


def check_size(spec: Spec, tg: TaskGraph, max_params: int = reg.MAX_PARAMS
               ) -> tuple[Size | None, list[Diagnostic]]:
    """The size of a spec whose graph is acyclic (None otherwise), and E419 when its
    parameters are over `max_params`."""
    if not tg.acyclic:
        return None, []
    size = model_size(spec, tg)
    if size.params <= max_params:
        return size, []
    biggest = _biggest(spec, tg)
    return size, [Diagnostic(
        "E419", f"the model has {size.params:,} parameters, over the cap of {max_params:,}",
        biggest.span if biggest is not None else None,
        f"the largest block is '{biggest.name}'; make it smaller, or raise the cap with "
        "`mtl check --max-params N`" if biggest is not None else
        "raise the cap with `mtl check --max-params N`")]


def _biggest(spec: Spec, tg: TaskGraph):
    """The node (or table owner) with the most parameters, to point the diagnostic at."""
    w = tg.widths
    sizes: list[tuple[int, object]] = []
    for node in [*spec.experts, *spec.towers]:
        count = node.count if isinstance(node, ExpertGroup) else 1
        sizes.append((count * mlp_params(w.get(spec.resolve(node.input.name), 0), node.net),
                      node))
    for f in spec.features:
        if f.embedded and f.params.table_rows() is not None:
            sizes.append((f.params.table_rows() * (f.params.dim or reg.DEFAULT_EMBEDDING_DIM),
                          f))
    sizes += [(_gate_params(spec, tg, g, w.get(spec.resolve(g.input.name), 0)), g)
              for g in spec.gates]
    return max(sizes, key=lambda s: s[0])[1] if sizes else None
