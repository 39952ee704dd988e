"""The loss-based weighting methods, written from their papers' formulas (docs/weighting.md).

Each class is named by its method's registry entry and built by `from_params(params, fixed)`;
its weights come from the loss values alone (GradNorm also measures gradient norms on the
last shared layer, which it receives through :class:`ParamGroups`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...language import registry as reg
from ..distributed import average
from ..groups import ParamGroups
from ..state import copied, fill, moved
from .base import Weighting

EPS = 1e-8


class Uncertainty(Weighting):
    """UWL (Kendall et al.): `L = sum_i 0.5 exp(-s_i) L_i + 0.5 s_i`, s_i = log sigma_i^2 learnt."""

    def __init__(self, tasks: list[str], init: float = 0.0):
        super().__init__({t: 1.0 for t in tasks})
        self.log_var = nn.Parameter(torch.full((len(tasks),), float(init)))  # (K,)

    @classmethod
    def from_params(cls, p: reg.UncertaintyWeighting, fixed: dict[str, float]
                    ) -> "Uncertainty":
        return cls(list(fixed), p.init)

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_var]

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        s = self.log_var
        L = self._stack(losses)
        self._note(0.5 * torch.exp(-s))
        return (0.5 * torch.exp(-s) * L + 0.5 * s).sum()

    def weights(self) -> dict[str, float]:
        w = (0.5 * torch.exp(-self.log_var.detach())).tolist()
        return dict(zip(self.tasks, w))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "log_var": self.log_var.detach().tolist()}

    def _state(self) -> dict:
        return {**super()._state(), "log_var": copied(self.log_var)}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        fill(self.log_var, state["log_var"])


class GradNorm(Weighting):
    """GradNorm (Chen et al.): learnable w_i that balance gradient norms on the last shared layer.

    `G_i = ||grad_W w_i L_i|| = w_i ||grad_W L_i||`: since w_i is a scalar, the norms are
    taken once without a graph (K backward passes restricted to W, no double backward)
    and `L_grad = sum_i |G_i - mean(G) r_i^alpha|` (bracket constant) is differentiated
    in w alone. The model gets the gradient of `sum_i w_i L_i` with w detached.
    """

    def __init__(self, tasks: list[str], alpha: float = 1.5, lr: float = 0.025):
        super().__init__({t: 1.0 for t in tasks})
        self.alpha = alpha
        self.w = nn.Parameter(torch.ones(len(tasks)))  # (K,)
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self.initial: Tensor | None = None  # L_i(0)
        self.shared: tuple[nn.Parameter, ...] = ()  # W, the last shared layer

    @classmethod
    def from_params(cls, p: reg.GradNormWeighting, fixed: dict[str, float]) -> "GradNorm":
        return cls(list(fixed), p.alpha, p.lr)

    def attach(self, groups: ParamGroups) -> None:
        self.shared = groups.last_shared

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        w = self.w.detach().clone()
        total = (w * L).sum()
        self._note(w)
        if torch.is_grad_enabled() and L.requires_grad:
            self._update(L, list(self.shared))
        return total

    def _update(self, L: Tensor, shared: list[nn.Parameter]) -> None:
        if not shared:
            return
        Ld = L.detach()
        if self.initial is None:
            self.initial = Ld.clamp_min(1e-12)
        norms = torch.stack([self._grad_norm(L[i], shared) for i in range(len(self.tasks))])
        G = self.w * norms  # (K,), differentiable in w only
        ratio = Ld / self.initial
        r = ratio / ratio.mean()
        target = (G.detach().mean() * r ** self.alpha).detach()
        l_grad = (G - target).abs().sum()
        self.optimizer.zero_grad(set_to_none=True)
        self.w.grad = torch.autograd.grad(l_grad, self.w)[0]
        self.optimizer.step()
        with torch.no_grad():
            self.w.clamp_(min=1e-4)
            self.w.mul_(len(self.tasks) / self.w.sum())

    @staticmethod
    def _grad_norm(loss: Tensor, shared: list[nn.Parameter]) -> Tensor:
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        sq = [average(g).pow(2).sum() for g in grads if g is not None]  # over ranks: global
        return torch.sqrt(torch.stack(sq).sum()) if sq else loss.new_zeros(())

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.detach().tolist()))

    def state_dict(self) -> dict:
        return {**super().state_dict(),
                "initial": None if self.initial is None else self.initial.tolist()}

    def _state(self) -> dict:
        return {**super()._state(), "w": copied(self.w), "initial": copied(self.initial),
                "optimizer": self.optimizer.state_dict()}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        fill(self.w, state["w"])
        self.initial = moved(state["initial"], device)
        self.optimizer.load_state_dict(state["optimizer"])


# --------------------------------------------------------------------------
# Loss-based methods
# --------------------------------------------------------------------------

def dwa_weights(last: Tensor, before: Tensor, t: float = 2.0) -> Tensor:
    """DWA: `K softmax(r / t)` with `r_i = L_i(e-1) / L_i(e-2)`, the epoch-mean losses."""
    r = last / before
    return len(r) * torch.softmax(r / t, 0)


class DWA(Weighting):
    """Dynamic weight average (Liu et al. 2019): weights 1 for the first two epochs, then
    `dwa_weights` of the last two epochs' mean losses, times each task's weight=."""

    def __init__(self, fixed: dict[str, float], t: float = 2.0):
        super().__init__(fixed)
        self.t = t
        self.history: list[Tensor] = []  # epoch-mean losses, (K,) each
        self.lam: Tensor | None = None

    @classmethod
    def from_params(cls, p: reg.DwaWeighting, fixed: dict[str, float]) -> "DWA":
        return cls(fixed, p.t)

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        lam = torch.ones_like(L) if self.lam is None else self.lam.to(L.device, L.dtype)
        w = self._c(L) * lam
        self._note(w)
        return (w * L).sum()

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.history.append(torch.tensor([mean_losses[t] for t in self.tasks]))
        if len(self.history) >= 2:
            self.lam = dwa_weights(self.history[-1], self.history[-2], self.t)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": [h.tolist() for h in self.history]}

    def _state(self) -> dict:
        return {**super()._state(), "history": [copied(h) for h in self.history],
                "lam": copied(self.lam)}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        self.history = [h.cpu() for h in state["history"]]  # made from floats: on the CPU
        self.lam = None if state["lam"] is None else state["lam"].cpu()


def rlw_weights(k: int, dist: str = "normal") -> Tensor:
    """RLW's random weights for one step; they sum to 1."""
    if dist == "dirichlet":
        return torch.distributions.Dirichlet(torch.ones(k)).sample()
    if dist == "uniform":
        u = torch.rand(k)
        return u / u.sum()
    return torch.softmax(torch.randn(k), 0)


class RLW(Weighting):
    """Random loss weighting (Lin et al. 2022): `rlw_weights` drawn afresh every step (from
    the seeded global generator), times each task's weight=."""

    def __init__(self, fixed: dict[str, float], dist: str = "normal"):
        super().__init__(fixed)
        self.dist = dist

    @classmethod
    def from_params(cls, p: reg.RlwWeighting, fixed: dict[str, float]) -> "RLW":
        return cls(fixed, p.dist)

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        w = self._c(L) * rlw_weights(len(L), self.dist).to(L.device, L.dtype)
        self._note(w)
        return (w * L).sum()


class GLS(Weighting):
    """Geometric loss strategy (Chennupati et al. 2019): `(prod_i L_i)^(1/K)`; with weight=,
    the weighted geometric mean `exp(sum_i w_i log L_i / sum_i w_i)`."""

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        c = self._c(L)
        e = c / c.sum()
        total = torch.exp((e * L.clamp_min(1e-12).log()).sum())
        self._note(total.detach() * e / L.detach().clamp_min(1e-12))
        return total


class ImtlL(Weighting):
    """IMTL-L (Liu et al. 2021): learnt scales s_i, `L = sum_i exp(s_i) L_i - s_i`; the optimum
    exp(s_i) = 1 / L_i makes every scaled loss 1."""

    def __init__(self, tasks: list[str], init: float = 0.0):
        super().__init__({t: 1.0 for t in tasks})
        self.scale = nn.Parameter(torch.full((len(tasks),), float(init)))  # (K,)

    @classmethod
    def from_params(cls, p: reg.ImtlLWeighting, fixed: dict[str, float]) -> "ImtlL":
        return cls(list(fixed), p.init)

    def parameters(self) -> list[nn.Parameter]:
        return [self.scale]

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        self._note(torch.exp(self.scale))
        return (torch.exp(self.scale) * L - self.scale).sum()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scale": self.scale.detach().tolist()}

    def _state(self) -> dict:
        return {**super()._state(), "scale": copied(self.scale)}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        fill(self.scale, state["scale"])


def famo_loss(L: Tensor, xi: Tensor, low: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """FAMO's model loss `sum_i z_i log(L_i - low_i + eps) / c`, z = softmax(xi),
    c = sum_i z_i / (L_i - low_i + eps) (held constant); and the effective weights z_i/(c D_i)."""
    z = torch.softmax(xi.detach(), 0)
    D = L - (0 if low is None else low) + EPS
    c = (z / D.detach()).sum()
    return (z * D.log()).sum() / c, z / (c * D.detach())


def famo_logit_grad(xi: Tensor, before: Tensor, after: Tensor, low: Tensor | None = None
                    ) -> Tensor:
    """FAMO's update direction for the logits: d = (dz/dxi)^T delta, with
    delta_i = log(L_i before the step) - log(L_i after it): z ⊙ (delta - z·delta)."""
    low = 0 if low is None else low
    delta = (before - low + EPS).log() - (after - low + EPS).log()
    xi = xi.detach().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)[0]


class FAMO(Weighting):
    """Fast adaptive multitask optimisation (Liu et al. 2023): the model trains on
    `famo_loss`; after each step the batch's losses are measured again and the logits xi take
    an Adam step (learning rate `lr`, weight decay `decay`) along `famo_logit_grad`."""

    def __init__(self, tasks: list[str], lr: float = 0.025, decay: float = 1e-3):
        super().__init__({t: 1.0 for t in tasks})
        self.xi = nn.Parameter(torch.zeros(len(tasks)))  # (K,)
        self.optimizer = torch.optim.Adam([self.xi], lr=lr, weight_decay=decay)
        self.before: Tensor | None = None

    @classmethod
    def from_params(cls, p: reg.FamoWeighting, fixed: dict[str, float]) -> "FAMO":
        return cls(list(fixed), p.lr, p.decay)

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        total, w = famo_loss(L, self.xi)
        self._note(w)
        if torch.is_grad_enabled() and L.requires_grad:
            self.before = L.detach()
        return total

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        if self.before is None:
            return
        with torch.no_grad():
            after = self._stack(recompute()).detach()
        grad = famo_logit_grad(self.xi, self.before, after)
        self.optimizer.zero_grad(set_to_none=True)
        self.xi.grad = grad
        self.optimizer.step()
        self.before = None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "xi": self.xi.detach().tolist()}

    def _state(self) -> dict:
        return {**super()._state(), "xi": copied(self.xi), "before": copied(self.before),
                "optimizer": self.optimizer.state_dict()}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        fill(self.xi, state["xi"])
        self.before = moved(state["before"], device)
        self.optimizer.load_state_dict(state["optimizer"])


def stch_loss(L: Tensor, nadir: Tensor, pref: Tensor, mu: float) -> tuple[Tensor, Tensor]:
    """Smooth Tchebycheff on log-normalised losses: `K mu logsumexp(w_i log(L_i/n_i) / mu)`,
    and its effective weights `K softmax_i w_i / L_i`."""
    k = len(L)
    logs = torch.log(L / nadir + 1e-20)
    z = pref * logs / mu
    total = k * mu * torch.logsumexp(z, 0)
    w = k * torch.softmax(z.detach(), 0) * pref / (L.detach() + 1e-20 * nadir)
    return total, w


class STCH(Weighting):
    """Smooth Tchebycheff scalarisation (Lin et al. 2024), as LibMTL runs it for MTL: for
    `warmup` epochs the sum of w_i log L_i, while the last warmup epoch's mean losses become the
    nadir point n; then `stch_loss`. The tasks' weight= are the preferences w_i."""

    def __init__(self, fixed: dict[str, float], mu: float = 1.0, warmup: int = 1):
        super().__init__(fixed)
        self.mu, self.warmup = mu, warmup
        self.epoch = 0
        self.nadir: Tensor | None = None
        self._acc: Tensor | None = None
        self._count = 0

    @classmethod
    def from_params(cls, p: reg.StchWeighting, fixed: dict[str, float]) -> "STCH":
        return cls(fixed, p.mu, p.warmup)

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None
             ) -> Tensor:
        L = self._stack(losses)
        c = self._c(L)
        if self.nadir is None:
            if self.epoch == self.warmup - 1 and L.requires_grad:
                self._acc = L.detach() if self._acc is None else self._acc + L.detach()
                self._count += 1
            self._note(c / (L.detach() + 1e-20))
            return (c * torch.log(L + 1e-20)).sum()
        total, w = stch_loss(L, self.nadir.to(L.device, L.dtype), c, self.mu)
        self._note(w)
        return total

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.epoch += 1
        if self.epoch == self.warmup and self.nadir is None:
            self.nadir = self._acc / self._count if self._count else \
                torch.tensor([mean_losses[t] for t in self.tasks])

    def state_dict(self) -> dict:
        return {**super().state_dict(),
                "nadir": None if self.nadir is None else self.nadir.tolist()}

    def _state(self) -> dict:
        return {**super()._state(), "epoch": self.epoch, "nadir": copied(self.nadir),
                "acc": copied(self._acc), "count": self._count}

    def _load(self, state: dict, device: torch.device | None) -> None:
        super()._load(state, device)
        self.epoch, self._count = int(state["epoch"]), int(state["count"])
        self.nadir, self._acc = moved(state["nadir"], device), moved(state["acc"], device)


# The loss methods' classes, keyed by the registry's method names (the registry's
# language/registry/weighting.py lists them with their parameter models).
LOSS_METHODS: dict[str, type[Weighting]] = {
    "fixed": Weighting, "uncertainty": Uncertainty, "gradnorm": GradNorm, "dwa": DWA,
    "rlw": RLW, "gls": GLS, "imtl_l": ImtlL, "famo": FAMO, "stch": STCH}
