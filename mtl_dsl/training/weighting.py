"""Loss weighting, `L = sum_i w_i L_i` (ARCHITECTURES.md section 3), as small classes.

One interface for every method the registry names (`weighting WORD(...)` in a spec):

* `step(losses, model)` returns the total the model backpropagates (updating the method's
  own state on the way); gradient methods return a surrogate whose gradient is their
  combined update (:mod:`mtl_dsl.balancing`);
* `weights()` the current effective weight of each task, dtotal/dL_i (for a gradient method:
  the coefficient of each task's gradient in the update), and `interval_weights()` their mean
  since the last call, which the training log records;
* `parameters()` the extra parameters the model's optimizer trains (UWL's, IMTL-L's);
* hooks the training loop calls: `attach(model)` once, `after_step(recompute)` after each
  optimizer step (FAMO measures the new losses), `end_epoch(mean_losses)` (DWA, STCH).

Loss-based methods are written here from their papers' formulas; the gradient methods'
aggregators come from torchjd, except DB-MTL's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import islice

import torch
from torch import Tensor, nn

from . import balancing
from ..language import registry as reg
from ..language.ir import Setting, Spec

EPS = 1e-8
PROBE_BATCHES = 4  # training batches the gradient conflict is measured on, each epoch


class Weighting:
    """Fixed weights: each task's `weight=` (1 by default)."""

    def __init__(self, weights: dict[str, float]):
        self.tasks = list(weights)
        self.fixed = dict(weights)
        self._w = dict(weights)
        self._last: Tensor | None = None
        self._sum: Tensor | None = None
        self._n = 0

    # ---- hooks -----------------------------------------------------------

    def attach(self, model: nn.Module) -> None:
        """Called once with the model before training."""

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        """Called after each optimizer step; `recompute()` gives the batch's losses again."""

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called after each epoch with the epoch's mean training loss of each task."""

    def parameters(self) -> list[nn.Parameter]:
        return []

    # ---- the step ----------------------------------------------------------

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
        return sum(self._w[t] * losses[t] for t in self.tasks)

    def _stack(self, losses: dict[str, Tensor]) -> Tensor:
        return torch.stack([losses[t] for t in self.tasks])  # (K,)

    def _c(self, like: Tensor) -> Tensor:
        """The fixed weights as a (K,) tensor next to `like`."""
        return torch.tensor([self.fixed[t] for t in self.tasks], dtype=like.dtype,
                            device=like.device)

    def _note(self, w: Tensor) -> None:
        """Record this step's effective weights (K,)."""
        w = w.detach()
        self._last = w
        self._sum = w.clone() if self._sum is None else self._sum + w
        self._n += 1

    # ---- what is logged ----------------------------------------------------

    def weights(self) -> dict[str, float]:
        if self._last is None:
            return dict(self._w)
        return dict(zip(self.tasks, self._last.tolist()))

    def interval_weights(self) -> dict[str, float]:
        """Mean effective weights over the steps since the previous call."""
        if not self._n:
            return self.weights()
        mean = (self._sum / self._n).tolist()
        self._sum, self._n = None, 0
        return dict(zip(self.tasks, mean))

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
        super().__init__({t: 1.0 for t in tasks})
        self.log_var = nn.Parameter(torch.full((len(tasks),), float(init)))  # (K,)

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_var]

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
        s = self.log_var
        L = self._stack(losses)
        self._note(0.5 * torch.exp(-s))
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
        super().__init__({t: 1.0 for t in tasks})
        self.alpha = alpha
        self.w = nn.Parameter(torch.ones(len(tasks)))  # (K,)
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self.initial: Tensor | None = None  # L_i(0)

    def step(self, losses: dict[str, Tensor], model: nn.Module) -> Tensor:
        L = self._stack(losses)
        w = self.w.detach().clone()
        total = (w * L).sum()
        self._note(w)
        if torch.is_grad_enabled() and L.requires_grad:
            self._update(L, [p for p in model.last_shared_parameters() if p.requires_grad])
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
        sq = [g.pow(2).sum() for g in grads if g is not None]
        return torch.sqrt(torch.stack(sq).sum()) if sq else loss.new_zeros(())

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.detach().tolist()))

    def state_dict(self) -> dict:
        return {"weights": self.weights(),
                "initial": None if self.initial is None else self.initial.tolist()}


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

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
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
        return {"weights": self.weights(), "history": [h.tolist() for h in self.history]}


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

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
        L = self._stack(losses)
        w = self._c(L) * rlw_weights(len(L), self.dist).to(L.device, L.dtype)
        self._note(w)
        return (w * L).sum()


class GLS(Weighting):
    """Geometric loss strategy (Chennupati et al. 2019): `(prod_i L_i)^(1/K)`; with weight=,
    the weighted geometric mean `exp(sum_i w_i log L_i / sum_i w_i)`."""

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
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

    def parameters(self) -> list[nn.Parameter]:
        return [self.scale]

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
        L = self._stack(losses)
        self._note(torch.exp(self.scale))
        return (torch.exp(self.scale) * L - self.scale).sum()

    def state_dict(self) -> dict:
        return {"weights": self.weights(), "scale": self.scale.detach().tolist()}


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

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
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
        return {"weights": self.weights(), "xi": self.xi.detach().tolist()}


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

    def step(self, losses: dict[str, Tensor], model: nn.Module | None) -> Tensor:
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
        return {"weights": self.weights(),
                "nadir": None if self.nadir is None else self.nadir.tolist()}


# --------------------------------------------------------------------------
# Gradient methods
# --------------------------------------------------------------------------

class GradientMethod(Weighting):
    """A gradient method: per-task gradients on the shared part (parameters or representation),
    combined by an aggregator (:mod:`mtl_dsl.balancing`). A method that multiplies weight=
    sees each task's gradient times its weight (or takes them as its preference vector);
    task-specific parameters get their own task's gradient, times weight= when the method
    multiplies them. DB-MTL works on the gradients of log L_i."""

    def __init__(self, kind: str, fixed: dict[str, float], params: reg.GradientWeighting):
        super().__init__(fixed)
        self.kind, self.params = kind, params
        self.log = kind == "dbmtl"
        c = torch.tensor([fixed[t] for t in self.tasks])
        self.aggregate = balancing.aggregator(kind, params, c)  # E602 here if a solver is missing
        self.balancer = balancing.Balancer(self.aggregate, params.on, params.embeddings)
        self.device = torch.device("cpu")
        honours = params.honours_weights()
        self.coeff = c if honours else torch.ones_like(c)  # on each task's loss in the surrogate
        preference = kind in balancing.PREFERENCE or \
            (kind == "crmogm" and params.of in balancing.PREFERENCE)
        self.scale = self.coeff if honours and not preference else torch.ones_like(c)

    def attach(self, model: nn.Module) -> None:
        device = next((p.device for p in model.parameters()), self.device)
        if device != self.device:  # preference vectors and the like next to the gradients
            c = torch.tensor([self.fixed[t] for t in self.tasks], device=device)
            self.aggregate = self.balancer.aggregate = balancing.aggregator(self.kind,
                                                                            self.params, c)
            self.device = device
        self.balancer.attach(model)

    def step(self, losses: dict[str, Tensor], model: nn.Module) -> Tensor:
        L = self._stack(losses)
        coeff, scale = self.coeff.to(L.device, L.dtype), self.scale.to(L.device, L.dtype)
        ell = torch.log(L + EPS) if self.log else L
        if not (torch.is_grad_enabled() and L.requires_grad):
            return (coeff * ell).sum()
        S, w, _ = self.balancer.surrogate(list(ell), L.detach(), model, scale, coeff)
        self._note(w / (L.detach() + EPS) if self.log else w)
        return S

    def state_dict(self) -> dict:
        return {"weights": self.weights(), "method": self.kind,
                "params": self.params.model_dump(mode="json")}


# --------------------------------------------------------------------------
# The spec's method
# --------------------------------------------------------------------------

def setting(spec: Spec, method: str | None = None) -> Setting:
    """The spec's weighting, or `method` (a word, e.g. 'pcgrad') with its default parameters."""
    current = spec.weighting
    if method is None or method == current.kind:
        return current
    kind = reg.kinds("weighting").get(method)
    if kind is None:
        raise ValueError(f"unknown weighting '{method}'; expected one of: "
                         f"{', '.join(reg.kinds('weighting'))}")
    return Setting(kind=method, params=kind.params(), span=current.span)


def make(spec: Spec, method: str | None = None) -> Weighting:
    """The spec's weighting, or `method` (e.g. 'uncertainty') with its default parameters."""
    s = setting(spec, method)
    tasks = [t.name for t in spec.supervised]
    fixed = {t.name: t.params.weight for t in spec.supervised}
    return build(s.kind, s.params, tasks, fixed)


def build(kind: str, p: reg.WeightingParams, tasks: list[str],
          fixed: dict[str, float] | None = None) -> Weighting:
    """A weighting from its word and parameter model."""
    fixed = fixed or {t: 1.0 for t in tasks}
    if p.family == "gradient":
        return GradientMethod(kind, fixed, p)
    simple = {"uncertainty": lambda: Uncertainty(tasks, p.init),
              "gradnorm": lambda: GradNorm(tasks, p.alpha, p.lr),
              "dwa": lambda: DWA(fixed, p.t),
              "rlw": lambda: RLW(fixed, p.dist),
              "gls": lambda: GLS(fixed),
              "imtl_l": lambda: ImtlL(tasks, p.init),
              "famo": lambda: FAMO(tasks, p.lr, p.decay),
              "stch": lambda: STCH(fixed, p.mu, p.warmup)}
    if kind in simple:
        return simple[kind]()
    return Weighting(fixed)


def conflict(model: nn.Module, losses: dict[str, Tensor], tasks: list[str]) -> dict[str, float]:
    """Cosine similarity of each pair of tasks' gradients on the shared parameters (no
    embedding tables): 'a|b' -> cos. Empty when nothing is shared or there is one task."""
    params = [p for p in model.shared_parameters() if p.requires_grad]
    if len(tasks) < 2 or not params:
        return {}
    C = balancing.cosines(balancing.jacobian([losses[t] for t in tasks], params)).tolist()
    return {f"{a}|{b}": C[i][j] for i, a in enumerate(tasks) for j, b in enumerate(tasks)
            if i < j and math.isfinite(C[i][j])}


def gradient_conflict(model: nn.Module, batches: Iterable[dict],
                      losses: Callable[[dict], dict[str, Tensor]], tasks: list[str],
                      probes: int = PROBE_BATCHES) -> dict[str, float]:
    """`conflict` averaged over the first `probes` batches, the model in eval mode (so
    measuring changes no batch-norm statistics); 'a|b' -> mean cosine."""
    if len(tasks) < 2:
        return {}
    was = model.training
    model.eval()
    found: dict[str, list[float]] = {}
    try:
        for batch in islice(batches, probes):
            for pair, cos in conflict(model, losses(batch), tasks).items():
                found.setdefault(pair, []).append(cos)
    finally:
        model.train(was)
    return {pair: sum(v) / len(v) for pair, v in found.items()}
