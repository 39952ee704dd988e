"""Gradient balancing: the tasks' gradients on the shared part, combined into one update.

A gradient method looks at the Jacobian J (K x n) of the task losses with respect to the
*balanced* tensors and an aggregator turns it into one vector g (n,):

* `on=parameters` (the default): the shared parameters, those of the blocks that two or more
  tasks depend on (`TaskGraph.shared`); embedding tables only with `embeddings=true`;
* `on=representation`: the outputs of the shared blocks that task-specific blocks read
  (LibMTL's rep_grad). Where such an output also feeds another shared block (PLE's levels),
  each task's row holds its gradient along the edges that leave the shared part there, so
  every path from a loss into the shared part is balanced exactly once.

Each row costs one backward pass restricted to what its task reads. The model then gets one
ordinary backward pass of a surrogate whose gradient is g on the balanced tensors and each
task's own gradient everywhere else (task-specific parameters, embeddings when they are not
balanced, and extra losses added next to it):

    S = sum_i c_i l_i + < x - x.detach(), g - sum_i c_i J_i >      (x: the balanced tensors)

so a step costs K + 1 backward passes where a fixed-weight step costs one. The aggregators
are in :mod:`mtl_dsl.training.weighting.aggregators`. With `on=representation` the balanced tensors
are the shared outputs that the training loop kept from its forward pass
(`CompiledModel.forward_keeping(batch, weighting.keeps())`) and hands to `step`: nothing is
stored on the model. See docs/weighting.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...language import registry as reg
from .aggregators import Aggregator, aggregator
from ..distributed import across_ranks
from ..groups import ParamGroups
from .base import Weighting

EPS = 1e-8


# --------------------------------------------------------------------------
# Where the gradients are taken
# --------------------------------------------------------------------------

def jacobian(losses: Sequence[Tensor], tensors: Sequence[Tensor]) -> Tensor:
    """(K, n): row i is the gradient of losses[i] with respect to `tensors`, flattened."""
    first = tensors[0]
    J = torch.zeros(len(losses), sum(t.numel() for t in tensors), dtype=first.dtype,
                    device=first.device)
    for i, loss in enumerate(losses):
        if not loss.requires_grad:
            continue
        grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1)
                   for g, t in zip(grads, tensors)], out=J[i])
    return J


def cosines(J: Tensor) -> Tensor:
    """(K, K) cosine similarity of the rows (0 for a zero row)."""
    U = J / J.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return U @ U.T


class Balancer:
    """Per-task gradients on the balanced tensors -> one update, delivered by a surrogate."""

    def __init__(self, aggregate: Aggregator, on: str = "parameters", embeddings: bool = False):
        self.aggregate, self.on, self.embeddings = aggregate, on, embeddings
        self.pending: dict[Tensor, Tensor] = {}  # parameter -> correction for its next .grad
        self.hooks: list = []
        self.params: tuple[nn.Parameter, ...] = ()
        self.reps: tuple[str, ...] = ()
        self.below: tuple[tuple[int, ...], ...] = ()

    def attach(self, groups: ParamGroups) -> None:
        if self.on == "representation":
            self.reps, self.below = groups.representations, groups.below
            if not self.reps:
                raise ValueError("on=representation: no shared block output is read by a "
                                 "task-specific block")
            return
        self.params = groups.balanced(self.embeddings)
        for h in self.hooks:
            h.remove()
        self.hooks = [p.register_post_accumulate_grad_hook(self._correct) for p in self.params]

    def keeps(self) -> tuple[str, ...]:
        """The shared outputs the training forward must keep (representation mode)."""
        return self.reps

    def _correct(self, p: Tensor) -> None:
        c = self.pending.pop(p, None)
        if c is not None:
            p.grad.add_(c)

    def tensors(self, kept: dict[str, Tensor] | None) -> list[Tensor]:
        """The balanced tensors of this step: the shared parameters, or the kept outputs."""
        if self.on == "parameters":
            return list(self.params)
        absent = [n for n in self.reps if kept is None or n not in kept]
        if absent:
            raise RuntimeError(f"on=representation: the forward did not keep {absent}")
        return [kept[n] for n in self.reps]

    def rows(self, losses: Sequence[Tensor], x: list[Tensor]) -> Tensor:
        if self.on == "parameters":
            return jacobian(losses, x)
        rows = []
        for loss in losses:
            grads = torch.autograd.grad(loss, x, retain_graph=True, allow_unused=True) \
                if loss.requires_grad else [None] * len(x)
            D = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, x)]
            for j in reversed(range(len(x))):  # the part of D[j] that leaves the shared part
                down = self.below[j]
                if down:
                    through = torch.autograd.grad([x[k] for k in down], x[j],
                                                  grad_outputs=[D[k] for k in down],
                                                  retain_graph=True, allow_unused=True)[0]
                    if through is not None:
                        D[j] = D[j] - through
            rows.append(torch.cat([d.reshape(-1) for d in D]))
        return torch.stack(rows)

    def surrogate(self, losses: Sequence[Tensor], raw: Tensor, x: list[Tensor],
                  scale: Tensor, coeff: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(S, row weights w, J) on the balanced tensors `x` (from `tensors`). Rows are the
        gradients of `losses`; the aggregator sees them scaled by `scale`. S = sum_i coeff_i
        losses_i, and hooks add g - sum_i coeff_i J_i to the gradient its backward pass leaves
        on the balanced tensors (parameters: after it is accumulated into .grad;
        representation: as it flows through)."""
        self.pending.clear()
        mine = self.rows(losses, x)  # (K, n) on this rank's rows
        J, own = across_ranks(mine, self.on == "representation")  # the same on every rank
        g, w = self.aggregate(scale[:, None] * J, raw)
        corr = (own(g) - coeff @ mine).detach()  # (n,)
        offset = 0
        for t in x:
            piece = corr[offset:offset + t.numel()].view_as(t)
            offset += t.numel()
            if self.on == "parameters":
                self.pending[t] = piece
            else:
                t.register_hook(lambda grad, piece=piece: grad + piece)
        return (coeff * torch.stack(list(losses))).sum(), w * scale, J


# --------------------------------------------------------------------------
# The weighting of every gradient method
# --------------------------------------------------------------------------

class GradientMethod(Weighting):
    """A gradient method: per-task gradients on the shared part (parameters or representation),
    combined by the method's aggregator. A method that multiplies weight= sees each task's
    gradient times its weight (or takes them as its preference vector); task-specific
    parameters get their own task's gradient, times weight= when the method multiplies them.
    DB-MTL works on the gradients of log L_i."""

    def __init__(self, kind: str, fixed: dict[str, float], params: reg.GradientWeighting):
        super().__init__(fixed)
        self.kind, self.params = kind, params
        self.log = kind == "dbmtl"
        c = torch.tensor([fixed[t] for t in self.tasks])
        self.aggregate = aggregator(kind, params, c)  # E602 here if a solver is missing
        self.balancer = Balancer(self.aggregate, params.on, params.embeddings)
        self.device = torch.device("cpu")
        honours = params.honours_weights()
        self.coeff = c if honours else torch.ones_like(c)  # on each task's loss in the surrogate
        preference = params.preference_mode() != "none"
        self.scale = self.coeff if honours and not preference else torch.ones_like(c)

    def attach(self, groups: ParamGroups) -> None:
        if groups.device != self.device:  # preference vectors and the like next to the gradients
            c = torch.tensor([self.fixed[t] for t in self.tasks], device=groups.device)
            self.aggregate = self.balancer.aggregate = aggregator(self.kind, self.params, c)
            self.device = groups.device
        self.balancer.attach(groups)

    def keeps(self) -> tuple[str, ...]:
        return self.balancer.keeps()

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None) -> Tensor:
        L = self._stack(losses)
        coeff, scale = self.coeff.to(L.device, L.dtype), self.scale.to(L.device, L.dtype)
        ell = torch.log(L + EPS) if self.log else L
        if not (torch.is_grad_enabled() and L.requires_grad):
            return (coeff * ell).sum()
        x = self.balancer.tensors(kept)
        S, w, _ = self.balancer.surrogate(list(ell), L.detach(), x, scale, coeff)
        self._note(w / (L.detach() + EPS) if self.log else w)
        return S

    def state_dict(self) -> dict:
        return {**super().state_dict(), "method": self.kind,
                "params": self.params.model_dump(mode="json")}

    def _state(self) -> dict:
        """The logged weights' sums and the aggregator's running values (DB-MTL, GradVac,
        Nash-MTL...: each aggregator names its own, aggregators.py)."""
        return {**super()._state(), "aggregate": self.aggregate.state_dict()}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        self.aggregate.load_state_dict(state["aggregate"])
