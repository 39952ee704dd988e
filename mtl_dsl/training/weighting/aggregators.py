"""Aggregators of the gradient methods: the task Jacobian J (K, n) -> one update g (n,).

Every gradient method has its adapter here, keyed by its registry name in `ADAPTERS`: a
function `(params, preference, K, device)` that builds the method's :class:`Aggregator`. The
stateless ones are torchjd's (imported on first use); those that carry state from step to
step are ours (DB-MTL here; GradVac, ExcessMTL, MoDo, SDMGrad in running.py, PCD in pcd.py,
Nash-MTL in nash.py), so each names its state in `state_dict()`. How a method reads the tasks'
weight= (as its preference vector, or not) is the registry's `preference` fact. See
docs/weighting.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...language import registry as reg
from ...language.diagnostics import Diagnostic, MtlError
from ..state import copied
from .nash import NashMTL
from .pcd import PCD
from .running import ExcessMTL, GradVac, MoDo, SDMGrad


class Aggregator:
    """J (K, n) and the raw losses (K,) -> (update g (n,), coefficient of each row (K,)).

    `state_dict()` / `load_state_dict()` hold what the aggregator carries from step to step,
    as the fields each class names (tensors and numbers: resume.pt loads with
    `weights_only=True`); most aggregators carry nothing. docs/weighting.md lists them."""

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, saved: dict) -> None:
        """Nothing to restore; a saved state that holds something is not this aggregator's."""
        if saved:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(saved)}")


Adapter = Callable[[reg.GradientWeighting, Tensor | None, int, torch.device], Aggregator]


def require(kind: str, params: reg.WeightingParams) -> None:
    """MtlError (E602) naming the extra to install when a method's solver is missing."""
    missing = params.missing_modules()
    if missing:
        raise MtlError([Diagnostic(
            "E602", f"weighting {kind} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed", None,
            f"pip install '{reg.SOLVER_EXTRA}' (torchjd with its optional solvers)")])


def preference(p: reg.GradientWeighting, fixed: Tensor) -> Tensor | None:
    """weight= as a method's preference vector (None: the method's default, all equal)."""
    mode = p.preference_mode()
    if mode == "none" or bool((fixed == 1).all()):
        return None
    return fixed / len(fixed) if mode == "mean" else fixed.clone()


def aggregator(kind: str, p: reg.GradientWeighting, fixed: Tensor) -> Aggregator:
    """The aggregator of a gradient method; `fixed` holds the tasks' weight= values."""
    require(kind, p)
    return ADAPTERS[kind](p, preference(p, fixed), len(fixed), fixed.device)


# --------------------------------------------------------------------------
# How an aggregator's result becomes (g, row weights)
# --------------------------------------------------------------------------

def coefficients(J: Tensor, g: Tensor) -> Tensor:
    """The w with J^T w closest to g: the effective row weights of a non-linear aggregator."""
    G = J @ J.T  # (K, K)
    eps = 1e-10 * (G.diagonal().sum() / len(G) + 1e-30)
    return torch.linalg.solve(G + eps * torch.eye(len(G), dtype=G.dtype, device=G.device), J @ g)


class Weighted(Aggregator):
    """A stateless torchjd WeightedAggregator: its weights, and the rows combined with them."""

    def __init__(self, agg):
        self.agg = agg

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        w = self.agg.weighting(J).to(J.dtype)
        return w @ J, w


class Running(Aggregator):
    """A weighting of ours that carries state (running.py, pcd.py, nash.py), applied to J or
    to its Gramian J J^T; the rows combined with its weights. Its state is the weighting's."""

    def __init__(self, weighting, gramian: bool = False):
        self.weighting, self.gramian = weighting, gramian

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weighting(J @ J.T if self.gramian else J).to(J.dtype)
        return w @ J, w

    def state_dict(self) -> dict:
        return self.weighting.state_dict()

    def load_state_dict(self, saved: dict) -> None:
        self.weighting.load_state_dict(saved)


class Plain(Aggregator):
    """A torchjd aggregator that is not a weighted sum (GradDrop, trimmed mean, Krum)."""

    def __init__(self, agg):
        self.agg = agg

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        g = self.agg(J).to(J.dtype)
        return g, coefficients(J, g)


def _wrap(agg) -> Aggregator:
    import torchjd.aggregation as A

    return Weighted(agg) if isinstance(agg, A.WeightedAggregator) else Plain(agg)


class Reduced(Aggregator):
    """An aggregator that commutes with rotations of the parameter space (ConFIG) run on a
    K x K factor R of J: R R^T = J J^T, so R = J Q for an orthonormal Q, agg(J) = agg(R) Q^T
    and the row weights w solve R^T w = agg(R). O(n K^2) instead of a pseudo-inverse of J."""

    def __init__(self, agg):
        self.agg = agg

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        lam, V = torch.linalg.eigh((J @ J.T).double())
        R = V * lam.clamp_min(0).sqrt()  # (K, K)
        w = (torch.linalg.pinv(R.T) @ self.agg(R).double()).to(J.dtype)
        return w @ J, w


class Normalised(Aggregator):
    """MGDA's gradient normalisation (l2, loss, loss+): rows divided by gn before solving."""

    def __init__(self, inner: Aggregator, norm: str):
        self.inner, self.norm = inner, norm

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        l2 = J.norm(dim=1)
        gn = {"l2": l2, "loss": L, "loss+": L * l2}[self.norm].clamp_min(1e-12)
        g, w = self.inner(J / gn[:, None], L)
        return g, w / gn

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, saved: dict) -> None:
        self.inner.load_state_dict(saved)


class Smoothed(Aggregator):
    """CR-MOGM: the weights of another weighted aggregator smoothed over the steps,
    `w <- alpha w_prev + (1 - alpha) w` (the first step's weights as they are).
    State: the previous weights and the inner aggregator's state."""

    def __init__(self, inner: Aggregator, alpha: float = 0.9):
        self.inner, self.alpha = inner, alpha
        self.previous: Tensor | None = None

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        w_hat = self.inner(J, L)[1]
        previous = w_hat if self.previous is None else self.previous
        self.previous = w = self.alpha * previous + (1.0 - self.alpha) * w_hat
        return w @ J, w

    def state_dict(self) -> dict:
        return {"previous": copied(self.previous), "inner": self.inner.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.previous = saved["previous"]
        self.inner.load_state_dict(saved["inner"])


class CrossBatch(Aggregator):
    """MoDo and SDMGrad want J1 J2^T of two independent batches; here J2 is the previous
    step's Jacobian (another batch), and the first step uses J J^T. State: that Jacobian and
    the weighting's own."""

    def __init__(self, weighting):
        self.weighting = weighting
        self.previous: Tensor | None = None

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        prev = self.previous if self.previous is not None and \
            self.previous.shape == J.shape else J
        w = self.weighting(J @ prev.T).to(J.dtype)
        self.previous = J.detach()
        return w @ J, w

    def state_dict(self) -> dict:
        return {"previous": copied(self.previous), "weighting": self.weighting.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.previous = saved["previous"]
        self.weighting.load_state_dict(saved["weighting"])


class DualBalance(Aggregator):
    """DB-MTL's gradient balancing on the rows (gradients of log L_i): an average over steps,
    m <- J + beta / t^sigma (m - J) from m = 0, then each task scaled to the largest norm,
    g = sum_i (max_j |m_j| / |m_i|) m_i. State: m and t."""

    def __init__(self, beta: float = 0.9, sigma: float = 0.0):
        self.beta, self.sigma = beta, sigma
        self.buffer: Tensor | None = None
        self.t = 0

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        self.t += 1
        if self.buffer is None or self.buffer.shape != J.shape:
            self.buffer = torch.zeros_like(J)
        self.buffer = J + self.beta / self.t ** self.sigma * (self.buffer - J)
        norms = self.buffer.norm(dim=1)  # (K,)
        alpha = norms.max() / (norms + 1e-8)
        return alpha @ self.buffer, alpha

    def state_dict(self) -> dict:
        return {"buffer": copied(self.buffer), "t": self.t}

    def load_state_dict(self, saved: dict) -> None:
        self.buffer, self.t = saved["buffer"], int(saved["t"])


# --------------------------------------------------------------------------
# The adapters the registry names: (params, preference, K, device) -> Aggregator
# --------------------------------------------------------------------------

def _jd():
    import torchjd.aggregation as A

    return A


def dbmtl(p: reg.DbmtlWeighting, pref, k, device) -> Aggregator:
    return DualBalance(p.beta, p.sigma)


def upgrad(p, pref, k, device) -> Aggregator:
    return _wrap(_jd().UPGrad(pref_vector=pref))


def dualproj(p, pref, k, device) -> Aggregator:
    return _wrap(_jd().DualProj(pref_vector=pref))


def mgda(p: reg.MgdaWeighting, pref, k, device) -> Aggregator:
    run = _wrap(_jd().MGDA(epsilon=p.epsilon, max_iters=p.iters))
    return run if p.norm == "none" else Normalised(run, p.norm)


def pcgrad(p, pref, k, device) -> Aggregator:
    return _wrap(_jd().PCGrad())


def gradvac(p: reg.GradvacWeighting, pref, k, device) -> Aggregator:
    return Running(GradVac(beta=p.beta), gramian=True)


def cagrad(p: reg.CagradWeighting, pref, k, device) -> Aggregator:
    return _wrap(_jd().CAGrad(c=p.c))


def imtl_g(p, pref, k, device) -> Aggregator:
    return _wrap(_jd().IMTLG())


def nashmtl(p: reg.NashMtlWeighting, pref, k, device) -> Aggregator:
    return Running(NashMTL(k, max_norm=p.max_norm, every=p.every, iters=p.iters))


def aligned_mtl(p: reg.AlignedMtlWeighting, pref, k, device) -> Aggregator:
    return _wrap(_jd().AlignedMTL(pref_vector=pref, scale_mode=p.scale))


def graddrop(p: reg.GraddropWeighting, pref, k, device) -> Aggregator:
    return _wrap(_jd().GradDrop(leak=torch.full((k,), float(p.leak), device=device)))


def config(p, pref, k, device) -> Aggregator:
    return Reduced(_jd().ConFIG(pref_vector=pref))


def fairgrad(p: reg.FairgradWeighting, pref, k, device) -> Aggregator:
    return _wrap(_jd().FairGrad(alpha=p.alpha))


def rgw(p, pref, k, device) -> Aggregator:
    return _wrap(_jd().Random())


def excess_mtl(p: reg.ExcessMtlWeighting, pref, k, device) -> Aggregator:
    return Running(ExcessMTL(step=p.step, warmup=p.warmup))


def pcd(p: reg.PcdWeighting, pref, k, device) -> Aggregator:
    return Running(PCD(tau=p.tau, beta=p.beta), gramian=True)


def sdmgrad(p: reg.SdmgradWeighting, pref, k, device) -> Aggregator:
    return CrossBatch(SDMGrad(lr=p.lr, momentum=p.momentum, iters=p.iters, lam=p.lam,
                              pref=pref))


def modo(p: reg.ModoWeighting, pref, k, device) -> Aggregator:
    return CrossBatch(MoDo(gamma=p.gamma, rho=p.rho))


def krum(p: reg.KrumWeighting, pref, k, device) -> Aggregator:
    return _wrap(_jd().Krum(n_byzantine=p.byzantine, n_selected=p.selected))


def trimmed_mean(p: reg.TrimmedMeanWeighting, pref, k, device) -> Aggregator:
    return _wrap(_jd().TrimmedMean(trim_number=p.trim))


def crmogm(p: reg.CrmogmWeighting, pref, k, device) -> Aggregator:
    """CR-MOGM smooths the weights of `of=` (built with its default parameters)."""
    inner = ADAPTERS[p.of](reg.WEIGHTINGS[p.of](), pref, k, device)
    if not isinstance(inner, (Weighted, Running)):
        raise TypeError(f"crmogm(of={p.of}): {p.of} is not a weighted aggregator")
    return Smoothed(inner, alpha=p.alpha)


# The gradient methods' adapters, keyed by the registry's method names.
ADAPTERS: dict[str, Adapter] = {
    "dbmtl": dbmtl,
    "upgrad": upgrad,
    "dualproj": dualproj,
    "mgda": mgda,
    "pcgrad": pcgrad,
    "gradvac": gradvac,
    "cagrad": cagrad,
    "imtl_g": imtl_g,
    "nashmtl": nashmtl,
    "aligned_mtl": aligned_mtl,
    "graddrop": graddrop,
    "config": config,
    "fairgrad": fairgrad,
    "rgw": rgw,
    "excess_mtl": excess_mtl,
    "pcd": pcd,
    "sdmgrad": sdmgrad,
    "modo": modo,
    "krum": krum,
    "trimmed_mean": trimmed_mean,
    "crmogm": crmogm,
}
