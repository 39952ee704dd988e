"""The gradient weightings that carry a running state from step to step, written here so that
their state is ours to save: GradVac's target cosines, ExcessMTL's gradient statistics, MoDo's
and SDMGrad's task weights, CR-MOGM's smoothed weights (PCD: pcd.py, Nash-MTL: nash.py).

torchjd 0.18 implements the same methods but keeps that state in private attributes, which a
resumed run could only read back by reaching into them. Each class here computes what
torchjd's computes, operation for operation (tests/test_weighting_state.py feeds both the same
inputs and asks for the same weights), and names its state in `state_dict()` /
`load_state_dict()`: tensors and numbers only, so resume.pt loads with `weights_only=True`.
docs/weighting.md says which method keeps what.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..state import copied


def project_onto_simplex(y: Tensor) -> Tensor:
    """The Euclidean projection of `y` (K,) onto the probability simplex (sort-based, as
    MoDo's and SDMGrad's reference implementations do)."""
    m = len(y)
    ordered = torch.sort(y, descending=True)[0]
    partial = y.new_zeros(())
    shift = (torch.sum(y) - 1.0) / m
    for i in range(m - 1):
        partial = partial + ordered[i]
        candidate = (partial - 1.0) / (i + 1.0)
        if candidate > ordered[i + 1]:
            shift = candidate
            break
    return (y - shift).clamp(min=0.0)


class GradVac:
    """Gradient Vaccine (Wang et al. 2021) from the Gramian G (K, K): for each task i, the
    other tasks j in a random order (`torch.randperm`, the seeded global generator); where the
    cosine of g_i (as corrected so far) and g_j falls below its running target phi_ij, g_i
    gets the multiple of g_j that lifts it to the target; the target then moves toward the
    cosine, `phi_ij <- (1 - beta) phi_ij + beta cos_ij`. Returns the summed coefficients.
    State: `phi` (K, K), on the CPU where the loop runs."""

    def __init__(self, beta: float = 0.5, eps: float = 1e-8):
        self.beta, self.eps = beta, eps
        self.phi: Tensor | None = None

    @torch.no_grad()
    def __call__(self, gramian: Tensor) -> Tensor:
        G = gramian.to("cpu")
        m = len(G)
        if self.phi is None or self.phi.shape != (m, m) or self.phi.dtype != G.dtype:
            self.phi = torch.zeros(m, m, dtype=G.dtype)
        C = torch.eye(m, dtype=G.dtype)  # row i: g_i (corrected) as a combination of the g_k
        for i in range(m):
            self._vaccinate(G, C, i)
        return C.sum(dim=0).to(gramian.device)

    def _vaccinate(self, G: Tensor, C: Tensor, i: int) -> None:
        phi, eps = self.phi, self.eps
        cG = C[i] @ G  # dot products of g_i (corrected) with every g_j
        others = [j for j in range(len(G)) if j != i]
        for j in [others[k] for k in torch.randperm(len(others)).tolist()]:
            norm_i = (cG * C[i]).sum().clamp(min=0.0).sqrt()
            norm_j = G[j, j].clamp(min=0.0).sqrt()
            cos = cG[j] / (norm_i * norm_j + eps)
            target = phi[i, j]
            if cos < target:
                sin = (1.0 - cos * cos).clamp(min=0.0).sqrt()
                sin_target = (1.0 - target * target).clamp(min=0.0).sqrt()
                w = norm_i * (target * sin - cos * sin_target) / (norm_j * sin_target + eps)
                C[i, j] = C[i, j] + w
                cG = cG + w * G[j]
            phi[i, j] = (1.0 - self.beta) * target + self.beta * cos

    def state_dict(self) -> dict:
        return {"phi": copied(self.phi)}

    def load_state_dict(self, saved: dict) -> None:
        self.phi = None if saved["phi"] is None else saved["phi"].to("cpu")


class ExcessMTL:
    """ExcessMTL (He et al. 2024) from J (K, n): each task's excess risk estimated as
    `sum_p J_ip^2 / sqrt(S_ip)`, S the running sum of squared gradients (an AdaGrad-style
    Hessian); for `warmup` steps the weights stay uniform while the estimates are averaged
    into the baseline (without warm-up the first step's estimate is the baseline); then
    `w <- softmax(log w + step * excess / baseline)`. State: the weights, S (K, n), the
    baseline, the warm-up sum and the step count."""

    def __init__(self, step: float = 1.0, warmup: int = 0):
        self.step, self.warmup = step, warmup
        self.weights: Tensor | None = None
        self.squares: Tensor | None = None  # S (K, n)
        self.baseline: Tensor | None = None
        self.warmup_sum: Tensor | None = None
        self.steps = 0

    @torch.no_grad()
    def __call__(self, J: Tensor) -> Tensor:
        if self.squares is None or self.squares.shape != J.shape or \
                self.squares.dtype != J.dtype or self.squares.device != J.device:
            self._start(J)
        sq = J.detach() ** 2
        self.squares.add_(sq)
        excess = (sq / torch.sqrt(self.squares + 1e-7)).sum(dim=1)  # (K,)
        if self.steps < self.warmup:
            self.warmup_sum.add_(excess)
            self.steps += 1
            return self.weights
        self.steps += 1
        if self.baseline is None:
            if self.warmup > 0:
                self.baseline = self.warmup_sum / self.warmup
                excess = excess / (self.baseline + 1e-7)
            else:
                self.baseline = excess
        else:
            excess = excess / (self.baseline + 1e-7)
        self.weights = torch.softmax(torch.log(self.weights) + excess * self.step, dim=0)
        return self.weights

    def _start(self, J: Tensor) -> None:
        m = len(J)
        self.squares = J.new_zeros(J.shape)
        self.warmup_sum = J.new_zeros(m)
        self.weights = J.new_full((m,), 1.0 / m)
        self.baseline, self.steps = None, 0

    def state_dict(self) -> dict:
        return {"weights": copied(self.weights), "squares": copied(self.squares),
                "baseline": copied(self.baseline), "warmup_sum": copied(self.warmup_sum),
                "steps": self.steps}

    def load_state_dict(self, saved: dict) -> None:
        self.weights, self.squares = saved["weights"], saved["squares"]
        self.baseline, self.warmup_sum = saved["baseline"], saved["warmup_sum"]
        self.steps = int(saved["steps"])


class MoDo:
    """MoDo (Chen et al. 2024) from A = J1 J2^T (K, K): one projected gradient step on the
    task weights per call, `lam <- simplex(lam - gamma (A lam + rho lam))`, from uniform.
    State: `lam` (K,)."""

    def __init__(self, gamma: float = 0.1, rho: float = 0.1):
        self.gamma, self.rho = gamma, rho
        self.lam: Tensor | None = None

    @torch.no_grad()
    def __call__(self, A: Tensor) -> Tensor:
        lam = _uniform_unless(self.lam, A)
        self.lam = project_onto_simplex(lam - self.gamma * (A @ lam + self.rho * lam))
        return self.lam

    def state_dict(self) -> dict:
        return {"lam": copied(self.lam)}

    def load_state_dict(self, saved: dict) -> None:
        self.lam = saved["lam"]


class SDMGrad:
    """SDMGrad (Xiao et al. 2023) from A = J1 J2^T (K, K): `iters` steps of projected SGD with
    momentum on the task weights w, pulled toward the preference `pref` (uniform by default)
    by `lam`, A first divided by the squared mean gradient norm; returns
    `(w + lam pref) / (1 + lam)`. State: `w` (K,), where the next call starts."""

    def __init__(self, lr: float = 10.0, momentum: float = 0.5, iters: int = 20,
                 lam: float = 0.3, pref: Tensor | None = None):
        self.lr, self.momentum, self.iters, self.lam, self.pref = lr, momentum, iters, lam, pref
        self.w: Tensor | None = None

    @torch.no_grad()
    def __call__(self, A: Tensor) -> Tensor:
        w = _uniform_unless(self.w, A)
        m = len(A)
        pref = A.new_full((m,), 1.0 / m) if self.pref is None else \
            self.pref.to(dtype=A.dtype, device=A.device)
        scale = torch.diag(A).clamp(min=0.0).sqrt().mean()
        a = A / (scale.pow(2) + 1e-8)
        velocity: Tensor | None = None
        for _ in range(self.iters):
            grad = a @ (w + self.lam * pref)
            velocity = grad if velocity is None else self.momentum * velocity + grad
            w = project_onto_simplex(w - self.lr * velocity)
        self.w = w
        return (w + self.lam * pref) / (1.0 + self.lam)

    def state_dict(self) -> dict:
        return {"w": copied(self.w)}

    def load_state_dict(self, saved: dict) -> None:
        self.w = saved["w"]


def _uniform_unless(state: Tensor | None, like: Tensor) -> Tensor:
    """`state`, or uniform weights when there is none yet for `like`'s tasks, dtype, device."""
    if state is not None and state.shape == (len(like),) and state.dtype == like.dtype and \
            state.device == like.device:
        return state
    return like.new_full((len(like),), 1.0 / len(like))
