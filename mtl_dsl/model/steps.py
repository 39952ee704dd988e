"""The plan's steps: frozen callables that each compute one node (or a few fused gates).

The compiler plans once (model/compiler.py) and `CompiledModel.trace` runs the steps in
order over one dict of named tensors, the env. A step holds the modules it calls and the
env keys it reads and writes, nothing else, so running the plan is a plain loop.
Fast paths live here: gates over the same input and experts run as one `Mix` (one
matmul), and runs of neighbouring sparse features are read as one view of their block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..language.ir import Gate, Spec
from ..language.syntax import BinOp, Expr, Number, Ref, refs_in
from .blocks import Embeddings, ExpertGroup, TaskHead
from .gates import RKEY, WKEY, DSelectGate, SoftmaxGate, mix, softmax_gates
from .pepnet import PEPNet
from .relations import TaskGate, Transfer, critic_mix, logit

Env = dict[str, Tensor]
Batch = dict[str, Tensor]

BLOCK = "emb/"  # env key prefix of a (B, F_d, d) embedding block; '/' is not in names
Piece = tuple[str, "int | None", "int | None"]  # env key, optional slice of a block's F axis
Over = tuple[tuple[str, bool], ...]  # the expert groups a gate mixes: (group, stored squeezed?)


def stacked(env: Env, over: Over) -> Tensor:
    """The experts a gate mixes, side by side: (B, n, D); a group of one expert is stored
    squeezed, (B, D)."""
    parts = [env[g].unsqueeze(1) if squeezed else env[g] for g, squeezed in over]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (B, n, D)


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
            env.update(self.embeddings.pool(batch, blocks))  # sequence features: (B, d) each


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
    over: Over
    stops: tuple[tuple[int, ...], ...] = ()  # STEM: per gate, experts mixed without gradient

    def __call__(self, batch: Batch, env: Env) -> None:
        experts = stacked(env, self.over)  # (B, n, D)
        w = softmax_gates(self.gates, env[self.input])  # (B, k, n)
        for j, name in enumerate(self.names):
            env[WKEY + name] = w[:, j]  # (B, n), a view: the balance loss and diagnostics
            mixed = _stopped(experts, self.stops[j]) if self.stops else experts
            env[name] = mix(w[:, j], mixed)  # (B, D)


def _stopped(experts: Tensor, stop: tuple[int, ...]) -> Tensor:
    """The (B, n, D) experts with those at `stop` detached: forward alike, no gradient."""
    if not stop:
        return experts
    keep = torch.ones(experts.shape[1], dtype=torch.bool, device=experts.device)
    keep[list(stop)] = False
    return torch.where(keep[None, :, None], experts, experts.detach())


ZKEY = "z:"  # env prefix of an AIT chain's z_t ('z:' is not in user names)


@dataclass(frozen=True)
class MixExperts:
    """A MetaHeac expert gate: softmax(W [e_task ; x]) over the experts."""

    name: str
    gate: TaskGate
    input: str
    over: Over

    def __call__(self, batch: Batch, env: Env) -> None:
        experts = stacked(env, self.over)  # (B, n, D)
        w = env[WKEY + self.name] = self.gate(env[self.input])  # (B, n)
        env[self.name] = mix(w, experts)  # (B, D)


@dataclass(frozen=True)
class MixSelect:
    """A DSelect-k gate: its weights mix the experts; the selector outputs are kept for the
    selector regulariser."""

    name: str
    gate: DSelectGate
    input: str
    over: Over

    def __call__(self, batch: Batch, env: Env) -> None:
        experts = stacked(env, self.over)  # (B, n, D)
        w, env[RKEY + self.name] = self.gate.select(env[self.input])  # (B, n), (B, k, n)
        env[WKEY + self.name] = w
        env[self.name] = mix(w, experts)  # (B, D)


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
class Interact:
    """A task-column interaction (model/interactions.py): its gate on the input and the
    stacked experts, the task's own group first."""

    name: str
    block: Callable[[Tensor, Tensor], Tensor]
    input: str
    over: Over

    def __call__(self, batch: Batch, env: Env) -> None:
        env[self.name] = self.block(env[self.input], stacked(env, self.over))  # (B, D)


@dataclass(frozen=True)
class Gated:
    """A PEPNet tower (model/pepnet.py) on its input and its personalisation prior `by`."""

    name: str
    block: PEPNet
    input: str
    by: str

    def __call__(self, batch: Batch, env: Env) -> None:
        env[self.name] = self.block(env[self.input], env[self.by])  # (B, D)


@dataclass(frozen=True)
class Rename:
    """A node whose value another node already computed (a MetaHeac task's critic mix)."""

    name: str
    source: str

    def __call__(self, batch: Batch, env: Env) -> None:
        env[self.name] = env[self.source]


def _factors(expr) -> list[str]:
    return [r.name for r in refs_in(expr)]


def product(expr: Expr, probs: dict[str, Tensor]) -> Tensor:
    """Evaluate `ctr * (dar * buy_d + (1 - dar) * buy_o)` on (B,) probabilities."""
    if isinstance(expr, Ref):
        return probs[expr.name]
    if isinstance(expr, Number):
        return torch.as_tensor(float(expr.value))
    assert isinstance(expr, BinOp)
    a, b = product(expr.left, probs), product(expr.right, probs)
    return a * b if expr.op == "*" else a + b if expr.op == "+" else a - b


Step = Callable[[Batch, Env], None]


def fusable(spec: Spec, gates: list[Gate]) -> dict[str, tuple[str, ...]]:
    """Gate -> the gates (in order) with the same input and the same experts."""
    groups: dict[tuple, list[str]] = {}
    for g in gates:
        key = (spec.resolve(g.input.name), tuple(spec.resolve(r.name) for r in g.over))
        groups.setdefault(key, []).append(g.name)
    return {name: tuple(names) for names in groups.values() for name in names}


def stop_positions(spec: Spec, gate: Gate, over: Over) -> tuple[int, ...]:
    """STEM: the positions along a gate's experts of the groups its `stop=` names."""
    stop, out, i = {spec.resolve(g) for g in gate.params.stop}, [], 0
    for group, _ in over:
        count = spec.node(group).count
        out += range(i, i + count) if group in stop else []
        i += count
    return tuple(out)


def concat_pieces(parts: list[str], embeddings: Embeddings | None) -> tuple[Piece, ...]:
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
