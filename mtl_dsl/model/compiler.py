"""Compile a validated spec into a PyTorch module: plan once, then apply per batch.

The compiler builds one block per graph node (in graph order, so initialisation is
deterministic under `torch.manual_seed`) and a flat *plan*: a list of steps
(model/steps.py), one per node, that `forward` runs in order over a dict of named
tensors. Building, planning and describing a node each go through one table keyed by
the node's kind (`BUILD`, `PLAN`, `SHAPE`; the kinds are language/graph.py's `KINDS`),
as torch.fx's interpreter dispatches on its handful of ops; gates and tasks then read
their `form` from the graph. Which parameters are shared, last-shared or task-specific
is read from the task graph. The torch module of each registry kind is the model's own
table, keyed by the kind's name, and every block is built from a `Call` of plain arguments
(model/implementations.py), kept in `calls` for the standalone file (docs/export.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import torch
import torch.nn as nn
from torch import Tensor

from ..language import registry as reg
from ..language.graph import TaskGraph, critic_use
from ..language.ir import Gate, Spec
from .blocks import ExpertGroup, TaskHead, activate
from .counterfactual import imputations, regularisers, risks
from .aux_losses import gate_aux_terms
from .steps import (ZKEY, AitStep, Apply, Batch, Concat, Env, Features, Gated, Interact, Mix,
                   MixCritics, MixExperts, MixSelect, Product, Rename, Step, concat_pieces,
                   fusable, stop_positions)
from .implementations import Call, gate_call, net_call, net_options
from .relations import Critics, TaskGate, Transfer, label_constraint
from .tables import embeddings_call

PARAMETRISED = ("embedding", "expert", "gate", "tower", "critics", "task")


_SHADOWED = frozenset(dir(nn.ModuleDict))  # names a ModuleDict key may not take (`train`)


def _key(name: str) -> str:
    """A node name as a ModuleDict key: template names like `p.l1.a` contain dots, and a
    name such as `train` or `keys` would shadow a ModuleDict attribute; '-' is never in a
    user's name, so neither escape can collide with another name."""
    key = name.replace(".", "-")
    return f"{key}-" if key in _SHADOWED else key


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

class CompiledModel(nn.Module):
    """A spec's model: `forward(batch)` -> {task: raw output}, plus parameter groups."""

    def __init__(self, spec: Spec, graph: TaskGraph, vocab_sizes: dict[str, int],
                 held: tuple[str, ...] = ()):
        super().__init__()
        self.spec, self.graph = spec, graph
        self.used = tuple(n for n in graph.order if graph.tasks_of.get(n))
        self.width = graph.widths
        self.calls: dict[str, Call] = {}  # submodule path -> the call that built it
        call = embeddings_call(spec, self.used, vocab_sizes, held)
        self.embeddings = call.build() if call is not None else None
        if call is not None:
            self.calls["embeddings"] = call
        self.experts = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        self.towers = nn.ModuleDict()  # towers and critics (the keys of saved weights)
        self.heads = nn.ModuleDict()
        self.transfers = nn.ModuleDict()  # AIT edges, "prev->next"
        self.ait_from = {b: a for t in spec.transfers if t.kind == "ait" for a, b in t.edges}
        for name in self.used:
            BUILD[graph.kind(name)](self, name)
        self.counterfactuals = regularisers(spec, graph)  # ESCM²: training-time risks
        for key, tower, head in imputations(self.counterfactuals, self.width):
            self._add("towers", key, tower)
            self._add("heads", key, head)
        self.plan: list[Step] = self._plan()
        self._gate_aux = gate_aux_terms(spec, graph, self.gates, _key)

    # ---- building: one builder per kind (BUILD) ------------------------------

    def _add(self, attr: str, key: str, call: Call) -> None:
        """The block `call` builds, under `key` in the ModuleDict `attr`; the call is kept."""
        getattr(self, attr)[key] = call.build()
        self.calls[f"{attr}.{key}"] = call

    def _in_dim(self, ref: str) -> int:
        return self.width[self.spec.resolve(ref)]

    def _build_nothing(self, name: str) -> None:
        """Features, inputs and critic uses own no weights (embeddings are built apart)."""

    def _build_expert(self, name: str) -> None:
        node = self.spec.node(name)
        self._add("experts", _key(name), Call(ExpertGroup, (self._in_dim(node.input.name),
                                                            node.count), net_options(node.net)))

    def _build_tower(self, name: str) -> None:
        node = self.spec.node(name)
        by = node.net.by if isinstance(node.net, reg.PepnetParams) else None  # PEPNet's prior
        self._add("towers", _key(name), net_call(node.net, self._in_dim(node.input.name),
                                                 self._in_dim(by) if by else None))

    def _build_critics(self, name: str) -> None:
        node = self.spec.node(name)
        self._add("towers", _key(name), Call(Critics, (self._in_dim(node.inputs[0].name),
                                                       node.count), net_options(node.net)))

    def _build_gate(self, name: str) -> None:
        gate: Gate = self.spec.node(name)
        in_dim, form = self._in_dim(gate.input.name), self.graph.form(name)
        if form in ("softmax", "dselect"):  # the registry kind's module
            call = gate_call(gate.params, in_dim, self.graph.experts_of(gate))
        elif form in ("stitch", "fusion"):  # task columns (model/interactions.py): own first
            own = self.spec.node(gate.over[0].name).count
            call = gate_call(gate.params, in_dim, self.graph.experts_of(gate), own)
        else:  # MetaHeac's task gates, over experts or critics
            n = self._critics(gate).count if form == "critics" else self.graph.experts_of(gate)
            call = Call(TaskGate, (in_dim, n), {"task_dim": gate.task_embedding,
                                                "use_input": gate.use_input,
                                                "temperature": gate.params.temperature})
        self._add("gates", _key(name), call)

    def _critics(self, gate: Gate):
        return self.spec.node(gate.over[0].name)

    def _build_task(self, name: str) -> None:
        """A head on the tower (or on the AIT output z_t); products and MetaHeac's critic
        mixes are computed, not learnt, so they have none."""
        form, task = self.graph.form(name), self.spec.node(name)
        if form in ("product", "critics"):
            return
        q_dim = self._in_dim(task.tower.name)
        if form == "ait":
            prev = self.ait_from[name]
            edge = self._edge(prev, name)
            flow = edge.params.transfer or reg.MLPParams(widths=(q_dim,))
            self._add("transfers", f"{prev}->{name}", Call(
                Transfer, (self._z_dim(prev), q_dim, edge.params.k), net_options(flow)))
            q_dim = edge.params.k
        self._add("heads", _key(name), Call(TaskHead, (q_dim, task.out_dim)))

    def _edge(self, a: str, b: str):
        return next(t for t in self.spec.transfers if t.kind == "ait" and (a, b) in t.edges)

    def _z_dim(self, task: str) -> int:
        """z_1 = q_1 (the tower's width); later steps' z_t are AIT outputs of width k."""
        prev = self.ait_from.get(task)
        if prev is None:
            return self._in_dim(self.spec.node(task).tower.name)
        return self._edge(prev, task).params.k

    # ---- planning: one step maker per kind (PLAN) ----------------------------

    def _plan(self) -> list[Step]:
        spec, graph = self.spec, self.graph
        dense = tuple(n for n in self.used if graph.kind(n) == "feature"
                      and spec.node(n).kind == "dense")
        steps: list[Step] = [Features(dense, self.embeddings, self._direct())]
        self._fused = fusable(spec, [spec.node(n) for n in self.used if graph.kind(n) == "gate"
                                     and graph.form(n) == "softmax"])
        for name in self.used:
            step = PLAN[graph.kind(name)](self, name)
            if step is not None:
                steps.append(step)
        return steps

    def _step_nothing(self, name: str) -> None:
        """Features and tables are read by the plan's first step, `Features`."""

    def _step_input(self, name: str) -> Step:
        parts = [self.spec.resolve(p.name) for p in self.spec.node(name).parts]
        return Concat(name, concat_pieces(parts, self.embeddings))

    def _step_expert(self, name: str) -> Step:
        node = self.spec.node(name)
        return Apply(name, self.experts[_key(name)], self.spec.resolve(node.input.name),
                     squeeze=node.count == 1)

    def _step_tower(self, name: str) -> Step:
        node = self.spec.node(name)
        if isinstance(node.net, reg.PepnetParams):
            return Gated(name, self.towers[_key(name)], self.spec.resolve(node.input.name),
                         self.spec.resolve(node.net.by))
        return Apply(name, self.towers[_key(name)], self.spec.resolve(node.input.name))

    def _step_gate(self, name: str) -> Step | None:
        form, gate = self.graph.form(name), self.spec.node(name)
        if form == "softmax":  # gates fused with an earlier one run in its step
            names = self._fused[name]
            return self._mix(names) if names[0] == name else None
        block, source = self.gates[_key(name)], self.spec.resolve(gate.input.name)
        if form in ("stitch", "fusion"):
            return Interact(name, block, source, self._over(gate))
        if form == "dselect":
            return MixSelect(name, block, source, self._over(gate))
        if form == "critics":
            use = critic_use(self._critics(gate).name, gate.task)
            return MixCritics(name, block, source, use)
        return MixExperts(name, block, source, self._over(gate))

    def _step_critic_use(self, name: str) -> Step:
        critics, task = self.graph.critic_use_of(name)
        node = self.spec.node(critics)
        source = self.spec.resolve(node.inputs[node.tasks.index(task)].name)
        return Apply(name, self.towers[_key(critics)], source)

    def _step_task(self, name: str) -> Step:
        form, task = self.graph.form(name), self.spec.node(name)
        if form == "product":
            return Product(name, task.product)
        source = self.spec.resolve(task.tower.name)
        if form == "critics":  # MetaHeac: the critic gate gave the logit
            return Rename(name, source)
        if form == "head":
            return Apply(name, self.heads[_key(name)], source, keep=ZKEY + name)
        prev = self.ait_from[name]
        return AitStep(name, self.transfers[f"{prev}->{name}"], self.heads[_key(name)],
                       ZKEY + prev, source)

    def _direct(self) -> tuple[str, ...]:
        """Sparse features some block reads itself (inputs read the embedding blocks)."""
        position = self.embeddings.position if self.embeddings is not None else {}
        return tuple(f for f in position
                     if any(self.graph.kind(r) != "input" for r in self.graph.g.successors(f)))

    def _over(self, gate: Gate) -> tuple[tuple[str, bool], ...]:
        """The expert groups a gate mixes, each with whether it is stored squeezed."""
        return tuple((g, self.spec.node(g).count == 1)
                     for g in (self.spec.resolve(r.name) for r in gate.over))

    def _mix(self, names: tuple[str, ...]) -> Mix:
        first: Gate = self.spec.node(names[0])
        over = self._over(first)
        return Mix(names, tuple(self.gates[_key(n)] for n in names),
                   self.spec.resolve(first.input.name), over,
                   tuple(stop_positions(self.spec, self.spec.node(n), over) for n in names))

    def use_embeddings(self, embeddings: nn.Module) -> None:
        """The tables in another module like `Embeddings` (model/torchrec_tables.py's)."""
        self.embeddings, self.plan[0] = embeddings, replace(self.plan[0], embeddings=embeddings)

    # ---- running ---------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw outputs: (B,) logits (binary) or values (regression), (B, C) logits."""
        env = self.trace(batch)
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
        return {t.name: activate(t.kind, out[t.name]) for t in self.spec.tasks}

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
            if t.kind == "counterfactual":
                continue
            alpha = t.params.constraint if t.kind == "ait" else t.params.alpha
            if alpha > 0:
                out.append((f"constraint:{t.name}", [r.name for r in t.chain], alpha))
        return out

    def aux_loss_names(self) -> list[str]:
        """Extra losses the model adds: the label constraint of each transfer chain, ESCM²'s
        counterfactual risks, the gates' balance and selector losses (model/aux_losses.py)."""
        return [name for name, _, _ in self._constraints()] + [
            r.name for r in self.counterfactuals] + list(self._gate_aux)

    def aux_keeps(self) -> tuple[str, ...]:
        """The env keys the aux losses read besides the outputs (gate weights and selector
        outputs; ESCM²'s imputation inputs): the loop keeps them from its forward pass
        (`forward_keeping`) and hands them to `aux_losses`."""
        return (*(k for term in self._gate_aux.values() for k in term.keys),
                *(r.source for r in self.counterfactuals if r.source is not None))

    def aux_losses(self, out: dict[str, Tensor], kept: dict[str, Tensor] | None = None,
                   labels: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """name -> alpha * L_lc (AITM's label constraint) along each chain; lambda * the
        counterfactual risk of each ESCM² pair (reading `labels`, task -> label, and the kept
        imputation inputs); each gate's weighted balance / selector loss (the kept keys)."""
        losses = {name: alpha * label_constraint([out[t] for t in chain])
                  for name, chain, alpha in self._constraints()}
        if self.counterfactuals:
            losses.update(risks(self.counterfactuals, out, kept or {}, labels or {},
                                self.towers, self.heads))
        return losses | {name: term(kept or {}) for name, term in self._gate_aux.items()}

    # ---- parameter groups (what the loss-weighting code acts on) -----------

    def node_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters of one graph node (an embedding node owns its whole dim table)."""
        kind = self.graph.kind(name)
        if kind == "embedding" and self.embeddings is not None:
            return [self.embeddings.table(name.removeprefix("emb:")).weight]
        if kind == "feature" and self.embeddings is not None \
                and name in self.embeddings.encoders:  # DUPN: a sequence's encoder
            return list(self.embeddings.encoders[name].parameters())
        modules = self._modules_of(kind)
        if modules is None or _key(name) not in modules:
            return []  # a computed node (a product, a critic mix) or one no task reads
        return list(modules[_key(name)].parameters())

    def _modules_of(self, kind: str) -> nn.ModuleDict | None:
        """Where the blocks of a parametrised kind live (critics beside the towers)."""
        return {"expert": self.experts, "gate": self.gates, "tower": self.towers,
                "critics": self.towers, "task": self.heads}.get(kind)

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
            if kind == "embedding":
                found += self.node_parameters(name)
            else:  # LAST_SHARED's other kinds: experts, towers, critics
                found.append(LAST_WEIGHT[kind](self._modules_of(kind)[_key(name)]))
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

    # ---- describing: one shape per kind (SHAPE) -------------------------------

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> list[dict]:
        """One row per node: name, kind, shape, params, shared_by (sorted task names)."""
        kind = self.graph.kind
        rows = [{"name": n, "kind": kind(n), "shape": SHAPE[kind(n)](self, n),
                 "params": self._count(n), "shared_by": sorted(self.graph.tasks_of[n])}
                for n in self.used]
        return rows + [{"name": r.key, "kind": "tower", "shape": "(B,)",  # ESCM²'s imputation
                        "params": sum(p.numel() for m in (self.towers[r.key], self.heads[r.key])
                                      for p in m.parameters()), "shared_by": [r.cvr]}
                       for r in self.counterfactuals if r.source is not None]

    def _shape_width(self, name: str) -> str:
        return f"(B, {self.width[name]})"

    def _shape_embedding(self, name: str) -> str:
        owner = name.removeprefix("emb:")
        return f"({self.embeddings.vocab[owner]}, {self.embeddings.dim_of[owner]})"

    def _shape_expert(self, name: str) -> str:
        count = self.spec.node(name).count
        return f"(B, {count}, {self.width[name]})" if count > 1 else self._shape_width(name)

    def _shape_gate(self, name: str) -> str:
        return "(B,)" if self.graph.form(name) == "critics" else self._shape_width(name)

    def _shape_critics(self, name: str) -> str:
        return f"(B, {self.spec.node(name).count}) per task"

    def _shape_critic_use(self, name: str) -> str:
        return f"(B, {self.spec.node(self.graph.critic_use_of(name)[0]).count})"

    def _shape_task(self, name: str) -> str:
        return "(B,)" if self.spec.node(name).out_dim == 1 else self._shape_width(name)

    def _count(self, name: str) -> int:
        if self.graph.kind(name) == "embedding":
            return self.embeddings.rows(name.removeprefix("emb:")).numel()
        return sum(p.numel() for p in self.node_parameters(name))


# One table per stage, keyed by node kind (tests check that each covers graph.KINDS).
M = CompiledModel
BUILD: dict[str, Callable[[CompiledModel, str], None]] = {
    "embedding": M._build_nothing, "feature": M._build_nothing, "input": M._build_nothing,
    "expert": M._build_expert, "gate": M._build_gate, "tower": M._build_tower,
    "critics": M._build_critics, "critic_use": M._build_nothing, "task": M._build_task}
PLAN: dict[str, Callable[[CompiledModel, str], "Step | None"]] = {
    "embedding": M._step_nothing, "feature": M._step_nothing, "input": M._step_input,
    "expert": M._step_expert, "gate": M._step_gate, "tower": M._step_tower,
    "critics": M._step_nothing, "critic_use": M._step_critic_use, "task": M._step_task}
SHAPE: dict[str, Callable[[CompiledModel, str], str]] = {
    "embedding": M._shape_embedding, "feature": M._shape_width, "input": M._shape_width,
    "expert": M._shape_expert, "gate": M._shape_gate, "tower": M._shape_width,
    "critics": M._shape_critics, "critic_use": M._shape_critic_use, "task": M._shape_task}
del M
# GradNorm's W in a last-shared block of each kind (language/graph.py LAST_SHARED)
LAST_WEIGHT: dict[str, Callable[[nn.Module], "nn.Parameter | None"]] = {
    "expert": lambda block: block.last_weight, "tower": lambda block: block.last_weight,
    "critics": lambda block: block.weight}


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def compile_model(spec: Spec, graph: TaskGraph | None = None,
                  vocab_sizes: dict[str, int] | None = None, held: tuple[str, ...] = ()
                  ) -> CompiledModel:
    """Build the model of a validated spec (see CompiledModel); `held` embedding blocks are
    built empty, their rows held by the training's sharded tables (training/embeddings/sharding.py)."""
    return CompiledModel(spec, graph or TaskGraph(spec), dict(vocab_sizes or {}), held)
