"""Compile a validated spec into a PyTorch module: plan once, then apply per batch.

The compiler builds one block per graph node (in graph order, so initialisation is
deterministic under `torch.manual_seed`) and a flat *plan*: a list of steps, one per
node, that `forward` runs in order over a dict of named tensors. Gates that read the
same input and mix the same experts (MMoE) run as one step with one matmul. Which
parameters are shared, last-shared or task-specific is read from the task graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from .blocks import MLP, Embeddings, ExpertGroup, SoftmaxGate, TaskHead, softmax_gates
from ..language.graph import critic_use
from .relations import Critics, TaskGate, Transfer, critic_mix, label_constraint, logit, product
from ..language.graph import TaskGraph, table_of
from ..language.ir import Feature, Gate, Input, Spec

Env = dict[str, Tensor]
Batch = dict[str, Tensor]
PARAMETRISED = ("embedding", "expert", "gate", "tower", "task")


def _key(name: str) -> str:
    """A node name as a ModuleDict key: template names like `p.l1.a` contain dots."""
    return name.replace(".", "-")


# --------------------------------------------------------------------------
# Plan steps: each computes one node (or a few fused gates) from the env
# --------------------------------------------------------------------------

BLOCK = "emb/"  # env key prefix of a (B, F_d, d) embedding block; '/' is not in names
Piece = tuple[str, "int | None", "int | None"]  # env key, optional slice of a block's F axis


@dataclass(frozen=True)
class Features:
    """Dense features from the batch as (B, size); sparse ones looked up once per dim."""

    dense: tuple[str, ...]
    embeddings: Embeddings | None
    direct: tuple[str, ...] = ()  # sparse features read other than through an input

    def __call__(self, batch: Batch, env: Env) -> None:
        for name in self.dense:
            x = batch[name]
            env[name] = x.reshape(x.shape[0], -1)  # (B, size)
        if self.embeddings is not None:
            blocks = self.embeddings(batch)  # key -> (B, F_d, d)
            env.update((BLOCK + k, block) for k, block in blocks.items())
            for f in self.direct:
                k, i = self.embeddings.position[f]
                env[f] = blocks[k][:, i]  # (B, d), a view
            env.update(self.embeddings.pool(batch))  # sequence features: (B, d) each


@dataclass(frozen=True)
class Concat:
    """An input: its parts side by side. A run of sparse features that sit next to each
    other in their embedding block is read as one (B, k*d) view of the block."""

    name: str
    pieces: tuple[Piece, ...]

    def __call__(self, batch: Batch, env: Env) -> None:
        parts = [env[k] if a is None else env[k][:, a:b].flatten(1) for k, a, b in self.pieces]
        env[self.name] = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (B, width)


@dataclass(frozen=True)
class Apply:
    """A block on one input: expert group, tower or task head."""

    name: str
    block: Callable[[Tensor], Tensor]
    input: str
    squeeze: bool = False  # a group of one expert is read as (B, D)
    keep: str | None = None  # also store the input under this key (an AIT chain's z_1)

    def __call__(self, batch: Batch, env: Env) -> None:
        x = env[self.input]
        if self.keep is not None:
            env[self.keep] = x
        y = self.block(x)
        env[self.name] = ExpertGroup.squeeze(y) if self.squeeze else y


@dataclass(frozen=True)
class Mix:
    """k gates over the same input and experts: one (B, k, n) softmax, k weighted sums."""

    names: tuple[str, ...]
    gates: tuple[SoftmaxGate, ...]
    input: str
    over: tuple[tuple[str, bool], ...]  # (expert group, stored squeezed?)

    def experts(self, env: Env) -> Tensor:
        parts = [env[g].unsqueeze(1) if squeezed else env[g] for g, squeezed in self.over]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (B, n, D)

    def __call__(self, batch: Batch, env: Env) -> None:
        experts = self.experts(env)  # (B, n, D)
        w = softmax_gates(self.gates, env[self.input])  # (B, k, n)
        for j, name in enumerate(self.names):
            env[name] = SoftmaxGate.mix(w[:, j], experts)  # (B, D)


ZKEY = "z:"  # env prefix of an AIT chain's z_t ('z:' is not in user names)


@dataclass(frozen=True)
class MixExperts:
    """A MetaHeac expert gate: softmax(W [e_task ; x]) over the experts."""

    name: str
    gate: TaskGate
    input: str
    over: tuple[tuple[str, bool], ...]

    def __call__(self, batch: Batch, env: Env) -> None:
        parts = [env[g].unsqueeze(1) if squeezed else env[g] for g, squeezed in self.over]
        experts = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (B, n, D)
        env[self.name] = SoftmaxGate.mix(self.gate(env[self.input]), experts)  # (B, D)


@dataclass(frozen=True)
class MixCritics:
    """A MetaHeac critic gate: a task's mix of the critics' probabilities, as a logit."""

    name: str
    gate: TaskGate
    input: str
    critics: str  # env key of the (B, C) critic logits on this task's representation

    def __call__(self, batch: Batch, env: Env) -> None:
        env[self.name] = critic_mix(self.gate(env[self.input]), env[self.critics])  # (B,)


@dataclass(frozen=True)
class Product:
    """A probability product over the entire space (ESMM, ESM2), kept as a logit."""

    name: str
    expr: object

    def __call__(self, batch: Batch, env: Env) -> None:
        probs = {r: torch.sigmoid(env[r]) for r in _factors(self.expr)}
        env[self.name] = logit(product(self.expr, probs))  # (B,)


@dataclass(frozen=True)
class AitStep:
    """AITM step t: z_t = AIT(g_(t-1)(z_(t-1)), q_t); the head reads z_t."""

    name: str
    transfer: Transfer
    head: TaskHead
    z_prev: str
    tower: str

    def __call__(self, batch: Batch, env: Env) -> None:
        z = self.transfer(env[self.z_prev], env[self.tower])  # (B, k)
        env[ZKEY + self.name] = z
        env[self.name] = self.head(z)


@dataclass(frozen=True)
class Rename:
    name: str
    source: str

    def __call__(self, batch: Batch, env: Env) -> None:
        env[self.name] = env[self.source]


def _factors(expr) -> list[str]:
    from ..language.syntax import refs_in

    return [r.name for r in refs_in(expr)]


Step = Callable[[Batch, Env], None]


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

class CompiledModel(nn.Module):
    """A spec's model: `forward(batch)` -> {task: raw output}, plus parameter groups."""

    def __init__(self, spec: Spec, graph: TaskGraph, vocab_sizes: dict[str, int]):
        super().__init__()
        self.spec, self.graph = spec, graph
        self.keep_outputs = False
        self.outputs: Env | None = None
        self.used = tuple(n for n in graph.order if graph.tasks_of.get(n))
        self.width = graph.widths
        self.embeddings = _embeddings(spec, self.used, vocab_sizes)
        self.experts = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        self.towers = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.transfers = nn.ModuleDict()  # AIT edges, "prev->next"
        self.ait_from = {b: a for t in spec.transfers if t.kind == "ait" for a, b in t.edges}
        for name in self.used:
            self._build(name)
        self.plan: list[Step] = self._plan()

    # ---- building --------------------------------------------------------

    def _in_dim(self, ref: str) -> int:
        return self.width[self.spec.resolve(ref)]

    def _build(self, name: str) -> None:
        kind, node = self.graph.kind(name), self.spec.node(name)
        if kind == "expert":
            block = ExpertGroup(self._in_dim(node.input.name), node.count, node.net)
            self.experts[_key(name)] = block
        elif kind == "gate" and node.task_embedding:  # MetaHeac's task gates
            n = self._critics(node).count if node.mixes == "critics" else \
                self.graph.experts_of(node)
            self.gates[_key(name)] = TaskGate(self._in_dim(node.input.name), n,
                                              node.task_embedding, node.use_input,
                                              node.params.temperature)
        elif kind == "gate":
            block = SoftmaxGate(self._in_dim(node.input.name), self.graph.experts_of(node),
                                node.params.temperature)
            self.gates[_key(name)] = block
        elif kind == "tower" and node is None:
            return  # one task's use of shared critics: the critics node owns the weights
        elif kind == "tower" and not hasattr(node, "input"):  # MetaHeac's critics
            self.towers[_key(name)] = Critics(self._in_dim(node.inputs[0].name), node.count,
                                              node.net)
        elif kind == "tower":
            self.towers[_key(name)] = MLP(self._in_dim(node.input.name), node.net)
        elif kind == "task":
            self._build_task(node)

    def _critics(self, gate: Gate):
        return self.spec.node(gate.over[0].name)

    def _build_task(self, task) -> None:
        """A head on the tower (or on the AIT output z_t); products and MetaHeac's critic
        mixes are computed, not learnt, so they have none."""
        if task.product is not None:
            return
        source = self.spec.node(task.tower.name)
        if isinstance(source, Gate) and source.mixes == "critics":
            return
        q_dim = self._in_dim(task.tower.name)
        prev = self.ait_from.get(task.name)
        if prev is not None:
            edge = self._edge(prev, task.name)
            z_prev = self._z_dim(prev)
            self.transfers[f"{prev}->{task.name}"] = Transfer(z_prev, q_dim, edge.params.k,
                                                              edge.params.transfer)
            q_dim = edge.params.k
        self.heads[_key(task.name)] = TaskHead(q_dim, task.out_dim)

    def _edge(self, a: str, b: str):
        return next(t for t in self.spec.transfers if t.kind == "ait" and (a, b) in t.edges)

    def _z_dim(self, task: str) -> int:
        """z_1 = q_1 (the tower's width); later steps' z_t are AIT outputs of width k."""
        prev = self.ait_from.get(task)
        if prev is None:
            return self._in_dim(self.spec.node(task).tower.name)
        return self._edge(prev, task).params.k

    def _plan(self) -> list[Step]:
        spec, graph = self.spec, self.graph
        dense = tuple(n for n in self.used if graph.kind(n) == "feature"
                      and spec.node(n).kind == "dense")
        steps: list[Step] = [Features(dense, self.embeddings, self._direct())]
        fused = _fusable(spec, [g for g in spec.gates if g.name in self.used
                                and not g.task_embedding])
        for name in self.used:
            kind, node = graph.kind(name), spec.node(name)
            if kind == "input":
                parts = [spec.resolve(p.name) for p in node.parts]
                steps.append(Concat(name, _pieces(parts, self.embeddings)))
            elif kind == "expert":
                steps.append(Apply(name, self.experts[_key(name)], spec.resolve(node.input.name),
                                   squeeze=node.count == 1))
            elif kind == "gate" and fused.get(name, ("",))[0] == name:
                steps.append(self._mix(fused[name]))
            elif kind == "gate" and node.task_embedding:
                steps.append(self._task_gate(node))
            elif kind == "tower" and node is None:
                steps.append(self._critic_use(name))
            elif kind == "tower" and hasattr(node, "input"):
                steps.append(Apply(name, self.towers[_key(name)], spec.resolve(node.input.name)))
            elif kind == "task":
                steps.append(self._task_step(node))
        return steps

    def _task_gate(self, gate: Gate) -> "Step":
        block, source = self.gates[_key(gate.name)], self.spec.resolve(gate.input.name)
        if gate.mixes == "critics":
            use = critic_use(self._critics(gate).name, gate.task)
            return MixCritics(gate.name, block, source, use)
        over = tuple((g, self.spec.node(g).count == 1)
                     for g in (self.spec.resolve(r.name) for r in gate.over))
        return MixExperts(gate.name, block, source, over)

    def _critic_use(self, name: str) -> "Step":
        critics = self.graph.g.nodes[name]["weights"]
        node = self.spec.node(critics)
        task = name.split("@", 1)[1]
        source = self.spec.resolve(node.inputs[node.tasks.index(task)].name)
        return Apply(name, self.towers[_key(critics)], source)

    def _task_step(self, task) -> "Step":
        if task.product is not None:
            return Product(task.name, task.product)
        source = self.spec.resolve(task.tower.name)
        if _key(task.name) not in self.heads:  # MetaHeac: the critic gate gave the logit
            return Rename(task.name, source)
        prev = self.ait_from.get(task.name)
        if prev is None:
            return Apply(task.name, self.heads[_key(task.name)], source, keep=ZKEY + task.name)
        return AitStep(task.name, self.transfers[f"{prev}->{task.name}"],
                       self.heads[_key(task.name)], ZKEY + prev, source)

    def _direct(self) -> tuple[str, ...]:
        """Sparse features some block reads itself (inputs read the embedding blocks)."""
        position = self.embeddings.position if self.embeddings is not None else {}
        return tuple(f for f in position
                     if any(self.graph.kind(r) != "input" for r in self.graph.g.successors(f)))

    def _mix(self, names: tuple[str, ...]) -> Mix:
        first: Gate = self.spec.node(names[0])
        over = tuple((g, self.spec.node(g).count == 1)
                     for g in (self.spec.resolve(r.name) for r in first.over))
        return Mix(names, tuple(self.gates[_key(n)] for n in names),
                   self.spec.resolve(first.input.name), over)

    # ---- running ---------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw outputs: (B,) logits (binary) or values (regression), (B, C) logits.

        With `keep_outputs` set, a training forward (grad enabled) also keeps every block's
        output in `self.outputs`, for methods that balance gradients on the shared
        representation; evaluation keeps nothing alive."""
        env = self.trace(batch)
        if self.keep_outputs:
            self.outputs = env if torch.is_grad_enabled() else None
        return {t.name: env[t.name] for t in self.spec.tasks}

    def forward_keeping(self, batch: Batch, keep: tuple[str, ...]
                        ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The raw outputs and the outputs of the blocks named in `keep`, from one forward.

        The explicit trace through which representation balancing reads the shared blocks'
        outputs (LibMTL's rep_grad): the caller owns the kept tensors, nothing is stored on
        the model."""
        env = self.trace(batch)
        return {t.name: env[t.name] for t in self.spec.tasks}, {n: env[n] for n in keep}

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Probabilities (sigmoid / softmax) or regression values; call .eval() first."""
        out = self(batch)
        return {t.name: _activate(t.kind, out[t.name]) for t in self.spec.tasks}

    def trace(self, batch: Batch) -> Env:
        """Every node's output by name (and z_t of AIT steps under 'z:TASK'): for tests,
        debugging and looking inside a model."""
        env: Env = {}
        for step in self.plan:
            step(batch, env)
        return env

    def _constraints(self) -> list[tuple[str, list[str], float]]:
        out = []
        for t in self.spec.transfers:
            alpha = t.params.constraint if t.kind == "ait" else t.params.alpha
            if alpha > 0:
                out.append((f"constraint:{t.name}", [r.name for r in t.chain], alpha))
        return out

    def aux_loss_names(self) -> list[str]:
        """Extra losses the model adds: the label constraint of each transfer chain."""
        return [name for name, _, _ in self._constraints()]

    def aux_losses(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """name -> alpha * L_lc (AITM's label constraint) along each chain, for these outputs."""
        return {name: alpha * label_constraint([out[t] for t in chain])
                for name, chain, alpha in self._constraints()}

    # ---- parameter groups (what the loss-weighting code acts on) -----------

    def node_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters of one graph node (an embedding node owns its whole dim table)."""
        kind = self.graph.kind(name)
        if kind == "embedding" and self.embeddings is not None:
            return [self.embeddings.table(name.removeprefix("emb:")).weight]
        modules = {"expert": self.experts, "gate": self.gates, "tower": self.towers,
                   "task": self.heads}.get(kind)
        if modules is None or _key(name) not in modules:
            return []
        return list(modules[_key(name)].parameters())

    def shared_parameters(self, include_embeddings: bool = False) -> list[nn.Parameter]:
        """Parameters of the blocks two or more tasks depend on (graph.shared)."""
        names = [n for n in self.graph.shared
                 if include_embeddings or self.graph.kind(n) != "embedding"]
        return _unique(p for n in names for p in self.node_parameters(n))

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last Linear weight of each last-shared block: GradNorm's W."""
        found = []
        for name in self.graph.last_shared:
            kind = self.graph.kind(name)
            if kind == "expert":
                found.append(self.experts[_key(name)].last_weight)
            elif kind == "tower":
                found.append(self.towers[_key(name)].last_weight)
            elif kind == "embedding":
                found += self.node_parameters(name)
        return _unique(p for p in found if p is not None)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters only `task` depends on, its head included."""
        if task not in self.graph.task_names:
            raise KeyError(f"unknown task '{task}'; tasks: {', '.join(self.graph.task_names)}")
        mine, others = [], set()
        for name in self._parametrised():
            params = self.node_parameters(name)
            if self.graph.tasks_of[name] == {task}:
                mine += params
            else:
                others |= {id(p) for p in params}
        return _unique(p for p in mine if id(p) not in others)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [] if self.embeddings is None else list(self.embeddings.parameters())

    def _parametrised(self) -> list[str]:
        return [n for n in self.graph.order if self.graph.kind(n) in PARAMETRISED
                and self.graph.tasks_of.get(n)]

    # ---- describing --------------------------------------------------------

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> list[dict]:
        """One row per node: name, kind, shape, params, shared_by (sorted task names)."""
        return [{"name": n, "kind": self.graph.kind(n), "shape": self._shape(n),
                 "params": self._count(n), "shared_by": sorted(self.graph.tasks_of[n])}
                for n in self.used]

    def _shape(self, name: str) -> str:
        kind, node = self.graph.kind(name), self.spec.node(name)
        if kind == "embedding":
            owner = name.removeprefix("emb:")
            return f"({self.embeddings.vocab[owner]}, {self.embeddings.dim_of[owner]})"
        if kind == "expert" and node.count > 1:
            return f"(B, {node.count}, {self.width[name]})"
        if kind == "task" and node.out_dim == 1:
            return "(B,)"
        if kind == "tower" and node is None:  # one task's use of the critics
            return f"(B, {self.spec.node(self.graph.g.nodes[name]['weights']).count})"
        if kind == "tower" and not hasattr(node, "input"):
            return f"(B, {node.count}) per task"
        if kind == "gate" and node.mixes == "critics":
            return "(B,)"
        return f"(B, {self.width[name]})"

    def _count(self, name: str) -> int:
        if self.graph.kind(name) == "embedding":
            return self.embeddings.rows(name.removeprefix("emb:")).numel()
        return sum(p.numel() for p in self.node_parameters(name))


def _activate(kind: str, y: Tensor) -> Tensor:
    if kind == "binary":
        return torch.sigmoid(y)
    if kind == "multiclass":
        return torch.softmax(y, -1)
    return y


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def _fusable(spec: Spec, gates: list[Gate]) -> dict[str, tuple[str, ...]]:
    """Gate -> the gates (in order) with the same input and the same experts."""
    groups: dict[tuple, list[str]] = {}
    for g in gates:
        key = (spec.resolve(g.input.name), tuple(spec.resolve(r.name) for r in g.over))
        groups.setdefault(key, []).append(g.name)
    return {name: tuple(names) for names in groups.values() for name in names}


def _pieces(parts: list[str], embeddings: Embeddings | None) -> tuple[Piece, ...]:
    """An input's parts, with runs of neighbouring block features merged into one slice."""
    position = embeddings.position if embeddings is not None else {}
    pieces: list[Piece] = []
    for part in parts:
        if part not in position:
            pieces.append((part, None, None))
            continue
        key, i = position[part]
        last = pieces[-1] if pieces else None
        if last is not None and last[0] == BLOCK + key and last[2] == i:
            pieces[-1] = (last[0], last[1], i + 1)
        else:
            pieces.append((BLOCK + key, i, i + 1))
    return tuple(pieces)


def _concat_order(spec: Spec, used: tuple[str, ...]) -> list[str]:
    """Features in the order inputs concatenate them (inputs in graph order), then the rest."""
    index, order = spec.index(), []

    def walk(name: str) -> None:
        node = index.get(name)
        if isinstance(node, Input):
            for part in node.parts:
                walk(spec.resolve(part.name))
        elif name not in order:
            order.append(name)

    for name in used:
        walk(name)
    return order


def _embeddings(spec: Spec, used: tuple[str, ...], vocab_sizes: dict[str, int]
                ) -> Embeddings | None:
    index = {f.name: f for f in spec.features}
    order = [index[n] for n in _concat_order(spec, used) if n in index]
    sparse = [f for f in order if f.kind == "sparse"]
    sequences = {f.name: (table_of(spec, f), f.params.pool) for f in order
                 if f.kind == "sequence"}
    if not sparse and not sequences:
        return None
    owners = {f.name: table_of(spec, f) for f in sparse}
    read = set(owners.values()) | {o for o, _ in sequences.values()}
    tables = {o: (_vocab(index[o], vocab_sizes), index[o].params.dim)
              for o in (f.name for f in spec.features) if o in read}
    return Embeddings(tables, owners, sequences)


def _vocab(owner: Feature, vocab_sizes: dict[str, int]) -> int:
    if owner.name in vocab_sizes:
        return int(vocab_sizes[owner.name])
    if owner.params.hash is not None:
        return owner.params.hash + 1  # bucket 0 holds missing values
    if isinstance(owner.params.vocab, int):
        return owner.params.vocab
    raise ValueError(f"feature '{owner.name}' has vocab=auto: its vocabulary size comes from "
                     f"the data; pass vocab_sizes={{'{owner.name}': N}} or set vocab=N")


def compile_model(spec: Spec, graph: TaskGraph | None = None,
                  vocab_sizes: dict[str, int] | None = None) -> CompiledModel:
    """Build the model of a validated spec (see CompiledModel)."""
    return CompiledModel(spec, graph or TaskGraph(spec), dict(vocab_sizes or {}))
