"""Blocks for explicit task relations (equations in docs/architectures.md): products
over the entire space (ESMM, ESM2), AITM's adaptive information transfer and label
constraint, and MetaHeac's task-embedding gates and shared critics.

Binary outputs stay logits everywhere in the model; a product (evaluated by the plan's
`Product` step, model/steps.py) is computed on probabilities and turned back into a
(clamped) logit, so one BCE-with-logits loss serves every binary task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .blocks import MLP, ExpertGroup

EPS = 1e-7


def logit(p: Tensor) -> Tensor:
    """The logit of a probability, clamped so BCE stays finite (products reach 0 easily)."""
    p = p.clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)


# --------------------------------------------------------------------------
# AITM (Xi et al. 2021)
# --------------------------------------------------------------------------

class AIT(nn.Module):
    """z_t = sum_u w_u h1(u) over u in {p_(t-1), q_t}, w = softmax(<h2(u), h3(u)> / sqrt(k))."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.h1, self.h2, self.h3 = nn.Linear(dim, k), nn.Linear(dim, k), nn.Linear(dim, k)
        self.k = k

    def forward(self, p: Tensor, q: Tensor) -> Tensor:
        u = torch.stack([p, q], dim=1)  # (B, 2, D)
        value, key, query = self.h1(u), self.h2(u), self.h3(u)  # (B, 2, k)
        w = torch.softmax((key * query).sum(-1) / math.sqrt(self.k), dim=1)  # (B, 2)
        return (w.unsqueeze(-1) * value).sum(1)  # (B, k)


class Transfer(nn.Module):
    """One AIT edge t-1 -> t: g_(t-1) (what may flow, an MLP on z_(t-1) whose last width is
    q_t's) and the AIT that merges it into q_t."""

    def __init__(self, z_dim: int, q_dim: int, k: int, widths: Sequence[int], act: str = "relu",
                 dropout: float = 0.0, norm: str = "none", feature_gate: int = 0):
        super().__init__()
        self.flow = MLP(z_dim, widths, act, dropout, norm, feature_gate)
        self.ait = AIT(q_dim, k)

    def forward(self, z_prev: Tensor, q: Tensor) -> Tensor:
        return self.ait(self.flow(z_prev), q)  # (B, k)


def label_constraint(logits: list[Tensor]) -> Tensor:
    """mean over samples of sum_(t>=2) max(y_t - y_(t-1), 0): a later step of a funnel
    predicted likelier than the step before it is penalised."""
    probs = [torch.sigmoid(x) for x in logits]
    gaps = [F.relu(b - a) for a, b in zip(probs, probs[1:])]  # (B,) each
    return torch.stack(gaps, 0).sum(0).mean()


# --------------------------------------------------------------------------
# MetaHeac (Zhu et al. 2021)
# --------------------------------------------------------------------------

class TaskGate(nn.Module):
    """softmax(W [e_task ; x]) over n experts or critics, e_task a learnt task embedding."""

    def __init__(self, in_dim: int, n: int, task_dim: int, use_input: bool,
                 temperature: float = 1.0):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(task_dim) * 0.1)  # (T,)
        self.use_input = use_input
        self.proj = nn.Linear(task_dim + (in_dim if use_input else 0), n)
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding.expand(x.shape[0], -1)  # (B, T)
        z = torch.cat([e, x], 1) if self.use_input else e  # (B, T + D)
        return torch.softmax(self.proj(z) / self.temperature, dim=-1)  # (B, n)


class Critics(nn.Module):
    """C shared critics (towers ending in one logit each), run as one batched group."""

    def __init__(self, in_dim: int, count: int, widths: Sequence[int] = (), act: str = "relu",
                 dropout: float = 0.0, norm: str = "none", feature_gate: int = 0):
        super().__init__()
        widths = tuple(widths)
        self.body = ExpertGroup(in_dim, count, widths, act, dropout, norm, feature_gate) \
            if widths else None
        width = widths[-1] if widths else in_dim
        self.weight = nn.Parameter(torch.empty(count, width).uniform_(-1, 1) / math.sqrt(width))
        self.bias = nn.Parameter(torch.zeros(count))
        self.count = count

    def forward(self, h: Tensor) -> Tensor:
        if self.body is not None:
            e = self.body(h)  # (B, C, W)
        else:
            e = h.unsqueeze(1).expand(-1, self.count, -1)  # (B, C, D)
        return (e * self.weight).sum(-1) + self.bias  # (B, C) logits


def critic_mix(w: Tensor, critic_logits: Tensor) -> Tensor:
    """A task's prediction: its critic gate's mix of the critics' probabilities, as a logit."""
    return logit((w * torch.sigmoid(critic_logits)).sum(-1))  # (B,)
