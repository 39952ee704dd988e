"""Priority-constrained descent (PCD), with its running gradient norms kept here so that
resume.pt can hold them (running.py says why; torchjd 0.18's `PCD` is the reference,
tests/test_weighting_state.py holds the two equal).

The first task is the primary one: the update follows its normalised gradient as closely as
possible while every other task i gets at least a fraction `tau` of the first-order progress
of a step along its own normalised gradient:

    min_d 1/2 |d - s_1 g_1|^2   subject to   s_i g_i . d >= tau |s_i g_i|^2   (i >= 2)

with `s_i = 1 / sqrt(v_i + eps)`, v the bias-corrected running mean (decay `beta`) of
|g_i|^2 over the steps; d is then rescaled to |g_1|. The program is solved on the Gramian
alone by Goldfarb and Idnani's dual active-set method (identity Hessian).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..state import copied


class PCD:
    """PCD's weights from the Gramian G (K, K). State: the running mean of the squared
    gradient norms (K,) (float64, CPU, where the program is solved) and the step count."""

    def __init__(self, tau: float = 0.02, beta: float = 0.999, eps: float = 1e-8):
        self.tau, self.beta, self.eps = tau, beta, eps
        self.mean_sq: Tensor | None = None
        self.steps = 0

    @torch.no_grad()
    def __call__(self, gramian: Tensor) -> Tensor:
        G = gramian.to(device="cpu", dtype=torch.float64)
        m = len(G)
        weights = torch.zeros(m, dtype=torch.float64)
        if not G.isfinite().all():  # nan and inf reach the update, not the running mean
            return torch.full_like(gramian.diagonal(), torch.nan)
        sq_norms = G.diagonal()
        scales = self._scales(sq_norms)
        precision = 10.0 * torch.finfo(gramian.dtype).eps  # of the Gramian, relative
        if sq_norms[0] > 0.0:  # a zero primary gradient: a zero update
            normalised = G * torch.outer(scales, scales)
            w = solve(normalised, torch.full([m - 1], self.tau, dtype=torch.float64),
                      dependence_tol=max(1e-9, precision))
            sq_norm = w @ normalised @ w
            magnitude = (w.abs() @ normalised.diagonal().sqrt()) ** 2  # its rounding's scale
            if sq_norm > precision * magnitude:
                weights = w * scales * (sq_norms[0] / sq_norm).sqrt()
        return weights.to(device=gramian.device, dtype=gramian.dtype)

    def _scales(self, sq_norms: Tensor) -> Tensor:
        """Update the running mean with this step's squared norms; each task's scale s_i."""
        if self.mean_sq is None or len(self.mean_sq) != len(sq_norms):
            self.mean_sq, self.steps = torch.zeros(len(sq_norms), dtype=torch.float64), 0
        self.steps += 1
        self.mean_sq = self.beta * self.mean_sq.to(sq_norms) + (1.0 - self.beta) * sq_norms
        root = (self.mean_sq / (1.0 - self.beta ** self.steps) + self.eps).sqrt()
        return torch.where(root > 0.0, 1.0 / root, 0.0)  # never moved: any scale will do

    def state_dict(self) -> dict:
        return {"mean_sq": copied(self.mean_sq), "steps": self.steps}

    def load_state_dict(self, saved: dict) -> None:
        mean_sq = saved["mean_sq"]
        self.mean_sq = None if mean_sq is None else mean_sq.to("cpu", torch.float64)
        self.steps = int(saved["steps"])


def solve(G: Tensor, taus: Tensor, tol: float = 1e-9, dependence_tol: float = 1e-9) -> Tensor:
    """The weights [1, mu_2, ..., mu_K] of the program's solution d = sum_i w_i g_i, given the
    Gramian G of the (normalised) gradients, the primary first; [1, 0, ..., 0] when the
    constraints cannot all hold. Each iteration adds a violated constraint (dropping those
    whose multiplier reaches zero on the way); at most 10 K iterations guard against rounding
    making it cycle."""
    m = len(G)
    weights = torch.zeros(m, dtype=G.dtype)
    weights[0] = 1.0
    if m == 1:
        return weights
    Gs, mu = G[1:, 1:], torch.zeros(m - 1, dtype=G.dtype)
    b = taus * Gs.diagonal() - G[1:, 0]  # b_j > 0: g_1 violates constraint j
    atol = tol * max(G.diagonal().max().item(), torch.finfo(G.dtype).tiny)
    active: list[int] = []
    budget = [10 * m]  # iterations left, shared with _add
    while budget[0] > 0:
        slacks = Gs @ mu - b
        slacks[active] = 0.0  # the active constraints hold with equality
        p = int(slacks.argmin())
        if slacks[p] >= -atol:
            break
        if not _add(Gs, b, mu, active, p, slacks[p], dependence_tol, budget):
            return weights  # infeasible
    weights[1:] = mu.clamp(min=0.0)
    return weights


def _add(Gs: Tensor, b: Tensor, mu: Tensor, active: list[int], p: int, slack: Tensor,
         dependence_tol: float, budget: list[int]) -> bool:
    """Make violated constraint p active (mu and active updated in place), dropping active
    ones whose multiplier reaches zero first; False when the constraints are infeasible."""
    while budget[0] > 0:
        budget[0] -= 1
        # dual step: +1 on mu_p, -r on the active mu; primal: z = g_p minus its part in the
        # span of the active gradients
        if active:
            r = torch.linalg.solve(Gs[active][:, active], Gs[active, p])
            z_sq = Gs[p, p] - Gs[p, active] @ r
            ratios = torch.where(r > 0.0, mu[active] / r, torch.inf)
            k = int(ratios.argmin())
            partial = ratios[k].item()
        else:
            r, z_sq, k, partial = torch.zeros(0, dtype=Gs.dtype), Gs[p, p], -1, torch.inf
        full = (-slack / z_sq).item() if z_sq > dependence_tol * Gs[p, p] else torch.inf
        step = min(partial, full)
        if step == torch.inf:
            return False
        mu[active] -= step * r
        mu[p] += step
        if full <= partial:
            active.append(p)
            return True
        mu[active[k]] = 0.0
        del active[k]
        slack = Gs[p] @ mu - b[p]
    return True
