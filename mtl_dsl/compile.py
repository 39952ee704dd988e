"""Compile a validated spec into a PyTorch module: plan once, then apply per batch.

The compiler builds one block per graph node (in graph order, so initialisation is
deterministic under `torch.manual_seed`) and a flat *plan*: a list of steps, one per
node, that `forward` runs in order over a dict of named tensors. Gates that read the
same input and mix the same experts (MMoE) run as one step with one matmul. Which
parameters are shared, last-shared or task-specific is read from the task graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch import Tensor

from .blocks import MLP, Embeddings, ExpertGroup, SoftmaxGate, TaskHead, softmax_gates
from .graph import TaskGraph, table_of
from .ir import Feature, Gate, Input, Spec

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

    def __call__(self, batch: Batch, env: Env) -> None:
        for name in self.dense:
            x = batch[name]
            env[name] = x.view(x.shape[0], -1)  # (B, size)
        if self.embeddings is not None:
            blocks = self.embeddings(batch)  # key -> (B, F_d, d)
            env.update((BLOCK + k, block) for k, block in blocks.items())
            for f, (k, i) in self.embeddings.position.items():
                env[f] = blocks[k][:, i]  # (B, d), a view


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

    def __call__(self, batch: Batch, env: Env) -> None:
        y = self.block(env[self.input])
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
        w = softmax_gates(list(self.gates), env[self.input])  # (B, k, n)
        for j, name in enumerate(self.names):
            env[name] = SoftmaxGate.mix(w[:, j], experts)  # (B, D)


Step = Callable[[Batch, Env], None]


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

class CompiledModel(nn.Module):
    """A spec's model: `forward(batch)` -> {task: raw output}, plus parameter groups."""

    def __init__(self, spec: Spec, graph: TaskGraph, vocab_sizes: dict[str, int]):
        super().__init__()
        self.spec, self.graph = spec, graph
        self.used = tuple(n for n in graph.order if graph.tasks_of.get(n))
        self.width = graph.widths
        self.embeddings = _embeddings(spec, graph, self.used, vocab_sizes)
        self.experts = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        self.towers = nn.ModuleDict()
        self.heads = nn.ModuleDict()
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
        elif kind == "gate":
            block = SoftmaxGate(self._in_dim(node.input.name), self.graph.experts_of(node),
                                node.params.temperature)
            self.gates[_key(name)] = block
        elif kind == "tower":
            self.towers[_key(name)] = MLP(self._in_dim(node.input.name), node.net)
        elif kind == "task":
            self.heads[_key(name)] = TaskHead(self._in_dim(node.tower.name), node.out_dim)

    def _plan(self) -> list[Step]:
        spec, graph = self.spec, self.graph
        dense = tuple(n for n in self.used if graph.kind(n) == "feature"
                      and spec.node(n).kind == "dense")
        steps: list[Step] = [Features(dense, self.embeddings)]
        fused = _fusable(spec, [g for g in spec.gates if g.name in self.used])
        for name in self.used:
            kind, node = graph.kind(name), spec.node(name)
            if kind == "input":
                parts = [spec.resolve(p.name) for p in node.parts]
                steps.append(Concat(name, _pieces(parts, self.embeddings)))
            elif kind == "expert":
                steps.append(Apply(name, self.experts[_key(name)], spec.resolve(node.input.name),
                                   squeeze=node.count == 1))
            elif kind == "gate" and fused[name][0] == name:
                steps.append(self._mix(fused[name]))
            elif kind == "tower":
                steps.append(Apply(name, self.towers[_key(name)], spec.resolve(node.input.name)))
            elif kind == "task":
                steps.append(Apply(name, self.heads[_key(name)], spec.resolve(node.tower.name)))
        return steps

    def _mix(self, names: tuple[str, ...]) -> Mix:
        first: Gate = self.spec.node(names[0])
        over = tuple((g, self.spec.node(g).count == 1)
                     for g in (self.spec.resolve(r.name) for r in first.over))
        return Mix(names, tuple(self.gates[_key(n)] for n in names),
                   self.spec.resolve(first.input.name), over)

    # ---- running ---------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw outputs: (B,) logits (binary) or values (regression), (B, C) logits."""
        env: Env = {}
        for step in self.plan:
            step(batch, env)
        return {t.name: env[t.name] for t in self.spec.tasks}

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Probabilities (sigmoid / softmax) or regression values; call .eval() first."""
        out = self(batch)
        return {t.name: _activate(t.kind, out[t.name]) for t in self.spec.tasks}

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


def _embeddings(spec: Spec, graph: TaskGraph, used: tuple[str, ...],
                vocab_sizes: dict[str, int]) -> Embeddings | None:
    index = {f.name: f for f in spec.features}
    sparse = [index[n] for n in _concat_order(spec, used)
              if n in index and index[n].kind == "sparse"]
    if not sparse:
        return None
    owners = {f.name: table_of(spec, f) for f in sparse}
    tables = {o: (_vocab(index[o], vocab_sizes), index[o].params.dim)
              for o in (f.name for f in spec.features) if o in owners.values()}
    return Embeddings(tables, owners)


def _vocab(owner: Feature, vocab_sizes: dict[str, int]) -> int:
    if owner.name in vocab_sizes:
        return int(vocab_sizes[owner.name])
    if isinstance(owner.params.vocab, int):
        return owner.params.vocab
    raise ValueError(f"feature '{owner.name}' has vocab=auto: its vocabulary size comes from "
                     f"the data; pass vocab_sizes={{'{owner.name}': N}} or set vocab=N")


def compile_model(spec: Spec, graph: TaskGraph | None = None,
                  vocab_sizes: dict[str, int] | None = None) -> CompiledModel:
    """Build the model of a validated spec (see CompiledModel)."""
    return CompiledModel(spec, graph or TaskGraph(spec), dict(vocab_sizes or {}))
