"""Loss weighting, `L = sum_i w_i L_i` (ARCHITECTURES.md section 3), as small classes.

One interface: `step(losses, model)` returns the total the model backpropagates
(doing any update of the weights' own parameters on the way), `weights()` the
current effective weight of each task for logging, and `parameters()` the extra
parameters the model's optimizer must train (UWL's log-variances).
"""

from __future__ import annotations

import torch
from torch import nn

from . import registry as reg
from .ir import Setting, Spec


class Weighting:
    """Fixed weights: each task's `weight=` (1 by default)."""

    def __init__(self, weights: dict[str, float]):
        self.tasks = list(weights)
        self._w = dict(weights)

    def parameters(self) -> list[nn.Parameter]:
        return []

    def step(self, losses: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
        return sum(self._w[t] * losses[t] for t in self.tasks)

    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def state_dict(self) -> dict:
        return {"weights": self.weights()}

    def to(self, device) -> "Weighting":
        """Move the scheme's own parameters (in place, so optimizers keep them)."""
        for v in vars(self).values():
            if isinstance(v, nn.Parameter):
                v.data = v.data.to(device)
        return self


class Uncertainty(Weighting):
    """UWL (Kendall et al.): `L = sum_i 0.5 exp(-s_i) L_i + 0.5 s_i`, s_i = log sigma_i^2 learnt."""

    def __init__(self, tasks: list[str], init: float = 0.0):
        self.tasks = list(tasks)
        self.log_var = nn.Parameter(torch.full((len(tasks),), float(init)))  # (K,)

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_var]

    def step(self, losses: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
        s = self.log_var
        L = torch.stack([losses[t] for t in self.tasks])  # (K,)
        return (0.5 * torch.exp(-s) * L + 0.5 * s).sum()

    def weights(self) -> dict[str, float]:
        w = (0.5 * torch.exp(-self.log_var.detach())).tolist()
        return dict(zip(self.tasks, w))

    def state_dict(self) -> dict:
        return {"weights": self.weights(), "log_var": self.log_var.detach().tolist()}


class GradNorm(Weighting):
    """GradNorm (Chen et al.): learnable w_i that balance gradient norms on the last shared layer.

    `G_i = ||grad_W w_i L_i|| = w_i ||grad_W L_i||`: since w_i is a scalar, the norms are
    taken once without a graph (K backward passes restricted to W, no double backward)
    and `L_grad = sum_i |G_i - mean(G) r_i^alpha|` (bracket constant) is differentiated
    in w alone. The model gets the gradient of `sum_i w_i L_i` with w detached.
    """

    def __init__(self, tasks: list[str], alpha: float = 1.5, lr: float = 0.025):
        self.tasks = list(tasks)
        self.alpha = alpha
        self.w = nn.Parameter(torch.ones(len(tasks)))  # (K,)
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self.initial: torch.Tensor | None = None  # L_i(0)

    def step(self, losses: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
        L = torch.stack([losses[t] for t in self.tasks])  # (K,)
        w = self.w.detach().clone()
        total = (w * L).sum()
        if torch.is_grad_enabled() and L.requires_grad:
            self._update(L, [p for p in model.last_shared_parameters() if p.requires_grad])
        return total

    def _update(self, L: torch.Tensor, shared: list[nn.Parameter]) -> None:
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
    def _grad_norm(loss: torch.Tensor, shared: list[nn.Parameter]) -> torch.Tensor:
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        sq = [g.pow(2).sum() for g in grads if g is not None]
        return torch.sqrt(torch.stack(sq).sum()) if sq else loss.new_zeros(())

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.detach().tolist()))

    def state_dict(self) -> dict:
        return {"weights": self.weights(),
                "initial": None if self.initial is None else self.initial.tolist()}


def make(spec: Spec, method: str | None = None) -> Weighting:
    """The spec's weighting, or `method` (e.g. 'uncertainty') with its default parameters."""
    setting = spec.weighting
    if method is not None and method != setting.kind:
        kind = reg.kinds("weighting").get(method)
        if kind is None:
            raise ValueError(f"unknown weighting '{method}'; expected one of: "
                             f"{', '.join(reg.kinds('weighting'))}")
        setting = Setting(kind=method, params=kind.params(), span=setting.span)
    tasks = [t.name for t in spec.tasks]
    p = setting.params
    if setting.kind == "uncertainty":
        return Uncertainty(tasks, p.init)
    if setting.kind == "gradnorm":
        return GradNorm(tasks, p.alpha, p.lr)
    return Weighting({t.name: t.params.weight for t in spec.tasks})
