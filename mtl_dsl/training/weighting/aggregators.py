"""Aggregators of the gradient methods: the task Jacobian J (K, n) -> one update g (n,).

Every gradient method has its adapter here, keyed by its registry name in `ADAPTERS`: a
function `(params, preference, K, device)` that builds the method's aggregator, most of them
torchjd's (imported on first use), DB-MTL's written here. How a method reads the tasks' weight= (as its preference vector, or not) is
the registry's `preference` fact. See docs/weighting.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...language import registry as reg
from ...language.diagnostics import Diagnostic, MtlError

# An aggregator: (J (K, n), the raw losses (K,)) -> (update g (n,), coefficient of each row (K,)).
Aggregate = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Adapter = Callable[[reg.GradientWeighting, Tensor | None, int, torch.device], Aggregate]


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


def aggregator(kind: str, p: reg.GradientWeighting, fixed: Tensor) -> Aggregate:
    """The aggregator of a gradient method; `fixed` holds the tasks' weight= values."""
    require(kind, p)
    return ADAPTERS[kind](p, preference(p, fixed), len(fixed), fixed.device)


def reopen(aggregate: Aggregate) -> None:
    """After a resumed run restored an aggregator's state: Nash-MTL builds its cvxpy problem
    on its first step only, so a restored one (past that step) builds it again here."""
    if not isinstance(aggregate, Weighted):
        return
    for m in aggregate.agg.modules():
        if type(m).__name__ == "_NashMTLWeighting" and m.step > 0:
            m._init_optim_problem()


# --------------------------------------------------------------------------
# How an aggregator's result becomes (g, row weights)
# --------------------------------------------------------------------------

def coefficients(J: Tensor, g: Tensor) -> Tensor:
    """The w with J^T w closest to g: the effective row weights of a non-linear aggregator."""
    G = J @ J.T  # (K, K)
    eps = 1e-10 * (G.diagonal().sum() / len(G) + 1e-30)
    return torch.linalg.solve(G + eps * torch.eye(len(G), dtype=G.dtype, device=G.device), J @ g)


class Weighted:
    """A torchjd WeightedAggregator: its weights, and the rows combined with them. `agg` stays
    reachable so CR-MOGM can smooth its weighting."""

    def __init__(self, agg):
        self.agg = agg

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        w = self.agg.weighting(J).to(J.dtype)
        return w @ J, w


def _plain(agg) -> Aggregate:
    """A torchjd aggregator that is not a weighted sum (GradDrop, trimmed mean, Krum)."""
    def run(J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        g = agg(J).to(J.dtype)
        return g, coefficients(J, g)
    return run


def _wrap(agg) -> Aggregate:
    import torchjd.aggregation as A

    return Weighted(agg) if isinstance(agg, A.WeightedAggregator) else _plain(agg)


def _reduced(agg) -> Aggregate:
    """An aggregator that commutes with rotations of the parameter space (ConFIG) run on a
    K x K factor R of J: R R^T = J J^T, so R = J Q for an orthonormal Q, agg(J) = agg(R) Q^T
    and the row weights w solve R^T w = agg(R). O(n K^2) instead of a pseudo-inverse of J."""
    def run(J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        lam, V = torch.linalg.eigh((J @ J.T).double())
        R = V * lam.clamp_min(0).sqrt()  # (K, K)
        w = (torch.linalg.pinv(R.T) @ agg(R).double()).to(J.dtype)
        return w @ J, w
    return run


def _normalised(inner: Aggregate, norm: str) -> Aggregate:
    """MGDA's gradient normalisation (l2, loss, loss+): rows divided by gn before solving."""
    def run(J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        l2 = J.norm(dim=1)
        gn = {"l2": l2, "loss": L, "loss+": L * l2}[norm].clamp_min(1e-12)
        g, w = inner(J / gn[:, None], L)
        return g, w / gn
    return run


class CrossBatch:
    """MoDo and SDMGrad want J1 J2^T of two independent batches; here J2 is the previous
    step's Jacobian (another batch), and the first step uses J J^T."""

    def __init__(self, weighting):
        self.weighting = weighting
        self.previous: Tensor | None = None

    def __call__(self, J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        prev = self.previous if self.previous is not None and \
            self.previous.shape == J.shape else J
        w = self.weighting(J @ prev.T).to(J.dtype)
        self.previous = J.detach()
        return w @ J, w


class DualBalance:
    """DB-MTL's gradient balancing on the rows (gradients of log L_i): an average over steps,
    m <- J + beta / t^sigma (m - J) from m = 0, then each task scaled to the largest norm,
    g = sum_i (max_j |m_j| / |m_i|) m_i."""

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


# --------------------------------------------------------------------------
# The adapters the registry names: (params, preference, K, device) -> Aggregate
# --------------------------------------------------------------------------

def _jd():
    import torchjd.aggregation as A

    return A


def dbmtl(p: reg.DbmtlWeighting, pref, k, device) -> Aggregate:
    return DualBalance(p.beta, p.sigma)


def upgrad(p, pref, k, device) -> Aggregate:
    return _wrap(_jd().UPGrad(pref_vector=pref))


def dualproj(p, pref, k, device) -> Aggregate:
    return _wrap(_jd().DualProj(pref_vector=pref))


def mgda(p: reg.MgdaWeighting, pref, k, device) -> Aggregate:
    run = _wrap(_jd().MGDA(epsilon=p.epsilon, max_iters=p.iters))
    return run if p.norm == "none" else _normalised(run, p.norm)


def pcgrad(p, pref, k, device) -> Aggregate:
    return _wrap(_jd().PCGrad())


def gradvac(p: reg.GradvacWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().GradVac(beta=p.beta))


def cagrad(p: reg.CagradWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().CAGrad(c=p.c))


def imtl_g(p, pref, k, device) -> Aggregate:
    return _wrap(_jd().IMTLG())


def nashmtl(p: reg.NashMtlWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().NashMTL(n_tasks=k, max_norm=p.max_norm, update_weights_every=p.every,
                               optim_niter=p.iters))


def aligned_mtl(p: reg.AlignedMtlWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().AlignedMTL(pref_vector=pref, scale_mode=p.scale))


def graddrop(p: reg.GraddropWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().GradDrop(leak=torch.full((k,), float(p.leak), device=device)))


def config(p, pref, k, device) -> Aggregate:
    return _reduced(_jd().ConFIG(pref_vector=pref))


def fairgrad(p: reg.FairgradWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().FairGrad(alpha=p.alpha))


def rgw(p, pref, k, device) -> Aggregate:
    return _wrap(_jd().Random())


def excess_mtl(p: reg.ExcessMtlWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().ExcessMTL(robust_step_size=p.step, n_warmup_steps=p.warmup))


def pcd(p: reg.PcdWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().PCD(tau=p.tau, beta=p.beta))


def sdmgrad(p: reg.SdmgradWeighting, pref, k, device) -> Aggregate:
    return CrossBatch(_jd().SDMGradWeighting(lr=p.lr, momentum=p.momentum, n_iter=p.iters,
                                             lambda_=p.lam, pref_vector=pref))


def modo(p: reg.ModoWeighting, pref, k, device) -> Aggregate:
    return CrossBatch(_jd().MoDoWeighting(gamma=p.gamma, rho=p.rho))


def krum(p: reg.KrumWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().Krum(n_byzantine=p.byzantine, n_selected=p.selected))


def trimmed_mean(p: reg.TrimmedMeanWeighting, pref, k, device) -> Aggregate:
    return _wrap(_jd().TrimmedMean(trim_number=p.trim))


def crmogm(p: reg.CrmogmWeighting, pref, k, device) -> Aggregate:
    """CR-MOGM smooths the weights of `of=` (built with its default parameters)."""
    A = _jd()
    inner = ADAPTERS[p.of](reg.WEIGHTINGS[p.of](), pref, k, device)
    if not isinstance(inner, Weighted):
        raise TypeError(f"crmogm(of={p.of}): {p.of} is not a weighted aggregator")
    return Weighted(A.WeightedAggregator(A.CRMOGMWeighting(inner.agg.weighting, alpha=p.alpha)))


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
