"""Interactions between task columns: cross-stitch's constant mix and AdaTT's/HoME's fusion
gate (docs/architectures.md, "Cross-stitch", "AdaTT", "HoME").

Both read the experts a gate lists, stacked as (B, n, D), the task's own group first (its
`own` experts), and give the task's next representation (B, D). The compiler builds them from
the registry's gate kinds `stitch` and `fusion` (model/implementations.py) and runs them
through the plan's `Interact` step (model/steps.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .gates import SoftmaxGate, mix


class StitchGate(nn.Module):
    """x_k = sum_j alpha_kj h_j: learnt constants, no input read. The own experts start at
    `own` in all (near identity, as Misra et al. initialise), the others share 1 - own."""

    def __init__(self, n: int, own_count: int, own: float = 0.9):
        super().__init__()
        others = n - own_count
        start = [own / own_count] * own_count + [(1 - own) / others] * others if others \
            else [1.0 / own_count] * own_count
        self.alpha = nn.Parameter(torch.tensor(start))  # (n,)

    def forward(self, x: Tensor, experts: Tensor) -> Tensor:
        return torch.einsum("n,bnd->bd", self.alpha, experts)  # (B, D)


class FusionGate(nn.Module):
    """softmax(W x / T)^T E over all n experts, plus a residual of the own m experts E_own:
    `linear` (AdaTT: v^T E_own with v ~ U(+-sqrt(1/m)), or E_own itself when m = 1), `gated`
    (HoME's self-gate: sigmoid(U x) E_own when m = 1, softmax(U x)^T E_own otherwise), `none`."""

    def __init__(self, in_dim: int, n: int, own_count: int, temperature: float = 1.0,
                 residual: str = "linear"):
        super().__init__()
        self.gate = SoftmaxGate(in_dim, n, temperature)
        self.own_count, self.residual = own_count, residual
        if residual == "linear" and own_count > 1:
            scale = math.sqrt(1.0 / own_count)
            self.v = nn.Parameter(torch.empty(own_count).uniform_(-scale, scale))  # (m,)
        if residual == "gated":
            self.self_gate = nn.Linear(in_dim, own_count)

    def forward(self, x: Tensor, experts: Tensor) -> Tensor:
        fused = mix(self.gate(x), experts)  # (B, D)
        return fused + self._residual(x, experts[:, :self.own_count])

    def _residual(self, x: Tensor, own: Tensor) -> Tensor | float:
        """The task's own experts (B, m, D) carried past the fusion."""
        if self.residual == "none":
            return 0.0
        if self.residual == "linear":
            return own[:, 0] if self.own_count == 1 else torch.einsum("m,bmd->bd", self.v, own)
        if self.own_count == 1:
            return torch.sigmoid(self.self_gate(x)) * own[:, 0]  # (B, 1) * (B, D)
        return mix(self.self_gate(x).softmax(-1), own)
