"""Nash-MTL (Navon et al. 2022), with its state kept here so that resume.pt can hold it
(running.py says why; torchjd 0.18's `NashMTL` is the reference, tests/test_weighting_state.py
holds the two equal).

Every `every` steps the weights alpha are the Nash bargaining solution for the normalised
Gramian G / |G|, found by a few convex solves (cvxpy with ECOS) of the linearised problem
from the previous solution; in between the previous solution is used again. The update
`alpha @ J` is clipped to norm `max_norm` (0: no clipping). The state is the step count and
the previous solution; the cvxpy problem is built from them when first needed, so a resumed
run builds its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class _Program:
    """The parametrised cvxpy problem, built once per process."""

    alpha: Any  # cp.Variable (K,), nonnegative
    previous: Any  # cp.Parameter (K,): the point the objective is linearised at
    gramian: Any  # cp.Parameter (K, K)
    scale: Any  # cp.Parameter (1,): the Gramian's norm
    problem: Any  # cp.Problem


def _program(k: int, previous: np.ndarray) -> _Program:
    import cvxpy as cp

    alpha = cp.Variable(shape=(k,), nonneg=True)
    prev = cp.Parameter(shape=(k,), value=previous)
    G = cp.Parameter(shape=(k, k), value=np.eye(k))
    scale = cp.Parameter(shape=(1,), value=np.array([1.0]))
    phi = (1 / prev + (1 / (G @ prev)) @ G) @ (alpha - prev)  # the linearised log terms
    G_alpha = G @ alpha
    constraints = [-cp.log(a * scale) - cp.log(G_a) <= 0 for a, G_a in zip(alpha, G_alpha)]
    problem = cp.Problem(cp.Minimize(cp.sum(G_alpha) + phi / scale), constraints)
    return _Program(alpha, prev, G, scale, problem)


class NashMTL:
    """Nash-MTL's weights from J (K, n). State: `step` and `alpha`, the previous solution
    (numpy; float32 ones until a solve moves it)."""

    def __init__(self, k: int, max_norm: float = 1.0, every: int = 1, iters: int = 20):
        self.k, self.max_norm, self.every, self.iters = k, max_norm, every, iters
        self.step = 0
        self.alpha = np.ones(k, dtype=np.float32)
        self._program: _Program | None = None  # not state: rebuilt by each process

    @torch.no_grad()
    def __call__(self, J: Tensor) -> Tensor:
        if self.step % self.every == 0:
            GTG = torch.mm(J, J.t())
            scale = torch.norm(GTG).detach().cpu().numpy().reshape((1,))
            alpha = self._solve((GTG / scale.item()).cpu().detach().numpy(), scale)
        else:
            alpha = self.alpha
        self.step += 1
        w = torch.from_numpy(alpha).to(device=J.device, dtype=J.dtype)
        if self.max_norm > 0:
            norm = torch.linalg.norm(w @ J)
            if norm > self.max_norm:
                w = (w / norm) * self.max_norm
        return w

    def _solve(self, gtg: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """A few solves of the problem linearised at the previous point; the last point."""
        from cvxpy import SolverError, ECOS

        if self._program is None:
            self._program = _program(self.k, self.alpha)
        p = self._program
        p.gramian.value, p.scale.value = gtg, scale
        alpha = self.alpha
        for _ in range(self.iters):
            p.alpha.value = p.previous.value = alpha
            try:
                p.problem.solve(solver=ECOS, warm_start=True, max_iters=100)
            except (SolverError, ValueError):  # ECOS fails on some singular Gramians
                p.alpha.value = p.previous.value
            if self._converged(p, gtg, alpha):
                break
            alpha = p.alpha.value
        if alpha is not None:
            self.alpha = alpha
        return self.alpha

    @staticmethod
    def _converged(p: _Program, gtg: np.ndarray, alpha: np.ndarray) -> bool:
        return bool(p.alpha.value is None
                    or np.linalg.norm(gtg @ alpha - 1 / (alpha + 1e-10)) < 1e-3
                    or np.linalg.norm(p.alpha.value - p.previous.value) < 1e-6)

    def state_dict(self) -> dict:
        return {"step": self.step, "alpha": torch.tensor(np.array(self.alpha))}

    def load_state_dict(self, saved: dict) -> None:
        self.step = int(saved["step"])
        self.alpha = saved["alpha"].cpu().numpy().copy()
