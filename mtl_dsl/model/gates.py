"""Gates over experts: softmax (with temperature, noise and noisy top-k) and DSelect-k.

A gate maps its input to one weight per expert, (B, n); `mix` sums the experts with them.
Like every block module, this one imports torch and the standard library only: the
standalone file of `mtl export` copies it (docs/export.md).
Several softmax gates over the same input and experts run as one matmul (`softmax_gates`);
each gate then finishes its own logits (noise while training, top-k), so fusing never
changes what a gate computes. The plan stores every gate's weights in the env under
`WKEY + name` (a reference, no copy), which is how the load-balancing loss and the expert
diagnostics (training/experts.py) read them: one forward, no second code path.
Equations and sources: docs/architectures.md ("Gates against collapse", "DSelect-k").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

WKEY = "w:"  # env prefix of a gate's (B, n) weights (':' is not in user names)
RKEY = "r:"  # env prefix of a DSelect-k gate's (B, k, n) selector outputs
ENTROPY_EPS = 1e-6  # inside the entropy's log, as the DSelect-k reference code


class SoftmaxGate(nn.Module):
    """`g(x) = softmax(W x / T)`: one weight per expert, per sample.

    `noise`: N(0, noise^2) added to the logits while training. `top_k`: Shazeer et al.'s
    noisy top-k gate: while training the logits get N(0, 1) * softplus(W_noise x) (W_noise
    starts at zero, as in the paper, so every expert is tried early), then all but the k
    largest are set to -inf before the softmax; in eval mode no noise is drawn.
    """

    def __init__(self, in_dim: int, n_experts: int, temperature: float = 1.0,
                 noise: float = 0.0, top_k: int | None = None):
        super().__init__()
        self.proj = nn.Linear(in_dim, n_experts)
        self.n_experts, self.temperature = n_experts, temperature
        self.noise, self.top_k = noise, top_k
        self.noise_proj = None
        if top_k is not None:
            self.noise_proj = nn.Linear(in_dim, n_experts)
            nn.init.zeros_(self.noise_proj.weight)
            nn.init.zeros_(self.noise_proj.bias)

    @property
    def plain(self) -> bool:
        """True when the weights are softmax(logits) and nothing else (the fused fast path)."""
        return self.noise == 0.0 and self.top_k is None

    def forward(self, x: Tensor) -> Tensor:
        return self.finish(_scaled(self.proj(x), self.temperature), x)  # (B, n)

    def finish(self, logits: Tensor, x: Tensor) -> Tensor:
        """Logits (already divided by T) -> weights: noise while training, top-k, softmax."""
        if self.training and self.noise > 0:
            logits = logits + self.noise * torch.randn_like(logits)
        if self.top_k is not None:
            if self.training:
                logits = logits + torch.randn_like(logits) * F.softplus(self.noise_proj(x))
            logits = keep_top_k(logits, self.top_k)
        return logits.softmax(-1)  # (B, n)


def mix(w: Tensor, experts: Tensor) -> Tensor:
    """Sum_i w_i E_i as a broadcast multiply-and-sum (a bmm of B tiny matrices is slower)."""
    return (w.unsqueeze(-1) * experts).sum(1)  # (B, n, 1) * (B, n, D) -> (B, D)


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """Every logit below the row's k-th largest set to -inf (ties at the k-th are kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def softmax_gates(gates: Sequence[SoftmaxGate], x: Tensor) -> Tensor:
    """Several gates over the same input and experts in one matmul: (B, k, n).

    The gates keep their own parameters (so each stays in its task's parameter group);
    their weights are concatenated per call, a copy of k*n*in numbers (tiny next to the
    matmul). A temperature divides the gate's weight and bias: (W x + b) / T.
    """
    if len(gates) == 1:
        return gates[0](x).unsqueeze(1)  # (B, 1, n)
    weight = torch.cat([_scaled(g.proj.weight, g.temperature) for g in gates])  # (k*n, in)
    bias = torch.cat([_scaled(g.proj.bias, g.temperature) for g in gates])  # (k*n,)
    logits = F.linear(x, weight, bias).view(x.shape[0], len(gates), -1)  # (B, k, n)
    if all(g.plain for g in gates):
        return logits.softmax(-1)  # (B, k, n)
    return torch.stack([g.finish(logits[:, j], x) for j, g in enumerate(gates)], 1)


def _scaled(t: Tensor, temperature: float) -> Tensor:
    return t if temperature == 1.0 else t / temperature


# --------------------------------------------------------------------------
# DSelect-k
# --------------------------------------------------------------------------

def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """S(t): 0 below -gamma/2, 1 above gamma/2, the cubic -2t^3/gamma^3 + 3t/(2 gamma) + 1/2
    between (continuously differentiable, and exactly 0 or 1 outside the band)."""
    cubic = (-2.0 / gamma ** 3) * t ** 3 + (3.0 / (2.0 * gamma)) * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t),
                       torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


def binary_codes(n: int, bits: int) -> Tensor:
    """(n, bits) booleans: row j is j's binary code, most significant bit first."""
    j = torch.arange(n).unsqueeze(1)
    shifts = torch.arange(bits - 1, -1, -1)
    return ((j >> shifts) & 1).bool()


class DSelectGate(nn.Module):
    """DSelect-k, per-example (Hazimeh et al. 2021): q(x) = sum_i alpha_i(x) r(S(Z_i x)).

    Selector i reads m = ceil(log2 n) logits z = Z_i x; expert j's share of it is
    prod_l S(z_l) if bit l of j is 1 else 1 - S(z_l). alpha = softmax(A x) mixes the k
    selectors. Initialised as the reference code: Z uniform in +-gamma/100, A in +-0.05.
    With n not a power of two some codes name no expert and q may sum to less than one
    (the selector loss pushes the mass back, see `selector_loss`).
    """

    def __init__(self, in_dim: int, n_experts: int, k: int = 2, gamma: float = 1.0):
        super().__init__()
        self.n_experts, self.k, self.gamma = n_experts, k, gamma
        self.bits = max(1, math.ceil(math.log2(n_experts)))
        self.z = nn.Linear(in_dim, k * self.bits)
        self.w = nn.Linear(in_dim, k)
        nn.init.uniform_(self.z.weight, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.z.bias, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.w.weight, -0.05, 0.05)
        nn.init.uniform_(self.w.bias, -0.05, 0.05)
        self.register_buffer("codes", binary_codes(n_experts, self.bits), persistent=False)

    @property
    def power_of_two(self) -> bool:
        return self.n_experts == 2 ** self.bits

    def select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(weights (B, n), selector outputs (B, k, n)) from one pass."""
        B = x.shape[0]
        s = smooth_step(self.z(x).view(B, self.k, 1, self.bits), self.gamma)  # (B, k, 1, m)
        r = torch.where(self.codes, s, 1 - s).prod(-1)  # (B, k, n)
        alpha = self.w(x).softmax(-1)  # (B, k)
        return (alpha.unsqueeze(-1) * r).sum(1), r  # (B, n), (B, k, n)

    def forward(self, x: Tensor) -> Tensor:
        return self.select(x)[0]  # (B, n)


# --------------------------------------------------------------------------
# Auxiliary losses
# --------------------------------------------------------------------------

def importance_loss(w: Tensor) -> Tensor:
    """CV(importance)^2, importance_j = sum over the batch of expert j's weight (Shazeer
    et al. 2017): 0 when every expert gets the same total weight."""
    importance = w.sum(0)  # (n,)
    mean = importance.mean()
    return ((importance - mean) ** 2).mean() / (mean ** 2 + 1e-10)


def selector_loss(r: Tensor, entropy: float, power_of_two: bool) -> Tensor:
    """DSelect-k's regulariser, a mean over the rows: entropy * sum_i H(r_i), which drives each
    selector to a single expert; with n not a power of two also sum_i (1 / sum_j r_ij - 1),
    which drives the selectors off the codes that name no expert (the reference code's term)."""
    loss = entropy * -(r * torch.log(r + ENTROPY_EPS)).sum((1, 2)).mean()
    if not power_of_two:
        loss = loss + (1.0 / r.sum(-1).clamp(min=ENTROPY_EPS) - 1.0).sum(-1).mean()
    return loss
