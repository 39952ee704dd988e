"""Gradient balancing: the tasks' gradients on the shared part, combined into one update.

A gradient method looks at the Jacobian J (K x n) of the task losses with respect to the
*balanced* tensors and an aggregator turns it into one vector g (n,):

* `on=parameters` (the default): the shared parameters, those of the blocks that two or more
  tasks depend on (`TaskGraph.shared`); embedding tables only with `embeddings=true`;
* `on=representation`: the outputs of the shared blocks that task-specific blocks read
  (LibMTL's rep_grad). Where such an output also feeds another shared block (PLE's levels),
  each task's row holds its gradient along the edges that leave the shared part there, so
  every path from a loss into the shared part is balanced exactly once.

Each row costs one backward pass restricted to what its task reads. The model then gets one
ordinary backward pass of a surrogate whose gradient is g on the balanced tensors and each
task's own gradient everywhere else (task-specific parameters, embeddings when they are not
balanced, and extra losses added next to it):

    S = sum_i c_i l_i + < x - x.detach(), g - sum_i c_i J_i >      (x: the balanced tensors)

so a step costs K + 1 backward passes where a fixed-weight step costs one. The aggregators
come from torchjd (imported on first use), DB-MTL's is written here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import networkx as nx
import torch
from torch import Tensor, nn

from ..language import registry as reg
from ..language.diagnostics import Diagnostic, MtlError

# An aggregator: (J (K, n), the raw losses (K,)) -> (update g (n,), coefficient of each row (K,)).
Aggregate = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

PREFERENCE = {"upgrad": "mean", "dualproj": "mean", "aligned_mtl": "mean", "sdmgrad": "mean",
              "config": "sum"}  # methods that take weight= as their preference vector


def missing_modules(params: reg.WeightingParams) -> list[str]:
    return [m for m in params.required_modules() if importlib.util.find_spec(m) is None]


def require(kind: str, params: reg.WeightingParams) -> None:
    """MtlError (E602) naming the extra to install when a method's solver is missing."""
    missing = missing_modules(params)
    if missing:
        raise MtlError([Diagnostic(
            "E602", f"weighting {kind} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed", None,
            f"pip install '{reg.SOLVER_EXTRA}' (torchjd with its optional solvers)")])


# --------------------------------------------------------------------------
# Aggregators
# --------------------------------------------------------------------------

def coefficients(J: Tensor, g: Tensor) -> Tensor:
    """The w with J^T w closest to g: the effective row weights of a non-linear aggregator."""
    G = J @ J.T  # (K, K)
    eps = 1e-10 * (G.diagonal().sum() / len(G) + 1e-30)
    return torch.linalg.solve(G + eps * torch.eye(len(G), dtype=G.dtype, device=G.device), J @ g)


def _weighted(agg) -> Aggregate:
    """A torchjd WeightedAggregator: its weights, and the rows combined with them."""
    def run(J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        w = agg.weighting(J).to(J.dtype)
        return w @ J, w
    return run


def _plain(agg) -> Aggregate:
    """A torchjd aggregator that is not a weighted sum (GradDrop, ConFIG, trimmed mean)."""
    def run(J: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
        g = agg(J).to(J.dtype)
        return g, coefficients(J, g)
    return run


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


def _torchjd(kind: str, p: reg.WeightingParams, pref: Tensor | None, k: int,
             device: torch.device | None = None):
    """The torchjd aggregator (or weighting) of a method word."""
    import torchjd.aggregation as A

    if kind == "upgrad":
        return A.UPGrad(pref_vector=pref)
    if kind == "dualproj":
        return A.DualProj(pref_vector=pref)
    if kind == "mgda":
        return A.MGDA(epsilon=p.epsilon, max_iters=p.iters)
    if kind == "pcgrad":
        return A.PCGrad()
    if kind == "gradvac":
        return A.GradVac(beta=p.beta)
    if kind == "cagrad":
        return A.CAGrad(c=p.c)
    if kind == "imtl_g":
        return A.IMTLG()
    if kind == "nashmtl":
        return A.NashMTL(n_tasks=k, max_norm=p.max_norm, update_weights_every=p.every,
                         optim_niter=p.iters)
    if kind == "aligned_mtl":
        return A.AlignedMTL(pref_vector=pref, scale_mode=p.scale)
    if kind == "graddrop":
        return A.GradDrop(leak=torch.full((k,), float(p.leak), device=device))
    if kind == "config":
        return A.ConFIG(pref_vector=pref)
    if kind == "fairgrad":
        return A.FairGrad(alpha=p.alpha)
    if kind == "rgw":
        return A.Random()
    if kind == "excess_mtl":
        return A.ExcessMTL(robust_step_size=p.step, n_warmup_steps=p.warmup)
    if kind == "pcd":
        return A.PCD(tau=p.tau, beta=p.beta)
    if kind == "sdmgrad":
        return A.SDMGradWeighting(lr=p.lr, momentum=p.momentum, n_iter=p.iters, lambda_=p.lam,
                                  pref_vector=pref)
    if kind == "modo":
        return A.MoDoWeighting(gamma=p.gamma, rho=p.rho)
    if kind == "krum":
        return A.Krum(n_byzantine=p.byzantine, n_selected=p.selected)
    if kind == "trimmed_mean":
        return A.TrimmedMean(trim_number=p.trim)
    raise KeyError(kind)


def preference(kind: str, p: reg.WeightingParams, fixed: Tensor) -> Tensor | None:
    """weight= as a method's preference vector (None: the method's default, all equal)."""
    if kind not in PREFERENCE or not p.honours_weights() or bool((fixed == 1).all()):
        return None
    return fixed / len(fixed) if PREFERENCE[kind] == "mean" else fixed.clone()


def aggregator(kind: str, p: reg.WeightingParams, fixed: Tensor) -> Aggregate:
    """The aggregator of a gradient method; `fixed` holds the tasks' weight= values."""
    require(kind, p)
    if kind == "dbmtl":
        return DualBalance(p.beta, p.sigma)
    k = len(fixed)
    if kind == "crmogm":
        import torchjd.aggregation as A

        inner = _torchjd(p.of, reg.WEIGHTINGS[p.of](), preference(p.of, p, fixed), k,
                         fixed.device)
        return _weighted(A.WeightedAggregator(A.CRMOGMWeighting(inner.weighting, alpha=p.alpha)))
    made = _torchjd(kind, p, preference(kind, p, fixed), k, fixed.device)
    if kind in ("sdmgrad", "modo"):
        return CrossBatch(made)
    import torchjd.aggregation as A

    run = _weighted(made) if isinstance(made, A.WeightedAggregator) else \
        _reduced(made) if kind == "config" else _plain(made)
    if kind == "mgda" and p.norm != "none":
        run = _normalised(run, p.norm)
    return run


# --------------------------------------------------------------------------
# Where the gradients are taken
# --------------------------------------------------------------------------

def jacobian(losses: Sequence[Tensor], tensors: Sequence[Tensor]) -> Tensor:
    """(K, n): row i is the gradient of losses[i] with respect to `tensors`, flattened."""
    first = tensors[0]
    J = torch.zeros(len(losses), sum(t.numel() for t in tensors), dtype=first.dtype,
                    device=first.device)
    for i, loss in enumerate(losses):
        if not loss.requires_grad:
            continue
        grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1)
                   for g, t in zip(grads, tensors)], out=J[i])
    return J


def cosines(J: Tensor) -> Tensor:
    """(K, K) cosine similarity of the rows (0 for a zero row)."""
    U = J / J.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return U @ U.T


def keep_outputs(model: nn.Module) -> None:
    """Ask a compiled model to keep its blocks' outputs after each training forward."""
    if not hasattr(model, "keep_outputs"):
        raise TypeError("on=representation needs a compiled model (CompiledModel.outputs)")
    model.keep_outputs = True


def representation_nodes(graph) -> tuple[str, ...]:
    """Shared blocks (not embedding tables) whose output a task-specific block reads."""
    return tuple(n for n in graph.shared if graph.kind(n) != "embedding"
                 and any(not graph.is_shared(s) for s in graph.g.successors(n)))


class Balancer:
    """Per-task gradients on the balanced tensors -> one update, delivered by a surrogate."""

    def __init__(self, aggregate: Aggregate, on: str = "parameters", embeddings: bool = False):
        self.aggregate, self.on, self.embeddings = aggregate, on, embeddings
        self.model: nn.Module | None = None
        self.pending: dict[Tensor, Tensor] = {}  # parameter -> correction for its next .grad
        self.hooks: list = []

    def attach(self, model: nn.Module) -> None:
        self.model = model
        if self.on == "representation":
            keep_outputs(model)
            self.reps = representation_nodes(model.graph)
            g = model.graph.g  # below[j]: the representations downstream of the j-th
            self.below = [[k for k, m in enumerate(self.reps) if m in nx.descendants(g, n)]
                          for n in self.reps]
            if not self.reps:
                raise ValueError("on=representation: no shared block output is read by a "
                                 "task-specific block")
        else:
            self.params = [p for p in model.shared_parameters(include_embeddings=self.embeddings)
                           if p.requires_grad]
            for h in self.hooks:
                h.remove()
            self.hooks = [p.register_post_accumulate_grad_hook(self._correct)
                          for p in self.params]

    def _correct(self, p: Tensor) -> None:
        c = self.pending.pop(p, None)
        if c is not None:
            p.grad.add_(c)

    def tensors(self, model: nn.Module) -> list[Tensor]:
        """The balanced tensors of the last forward."""
        if self.model is not model:
            self.attach(model)
        if self.on == "parameters":
            return self.params
        env = model.outputs
        if env is None or any(n not in env for n in self.reps):
            absent = [n for n in self.reps if env is None or n not in env]
            raise RuntimeError(f"on=representation: the forward did not produce {absent}")
        return [env[n] for n in self.reps]

    def rows(self, losses: Sequence[Tensor], x: list[Tensor]) -> Tensor:
        if self.on == "parameters":
            return jacobian(losses, x)
        rows = []
        for loss in losses:
            grads = torch.autograd.grad(loss, x, retain_graph=True, allow_unused=True) \
                if loss.requires_grad else [None] * len(x)
            D = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, x)]
            for j in reversed(range(len(x))):  # the part of D[j] that leaves the shared part
                down = self.below[j]
                if down:
                    through = torch.autograd.grad([x[k] for k in down], x[j],
                                                  grad_outputs=[D[k] for k in down],
                                                  retain_graph=True, allow_unused=True)[0]
                    if through is not None:
                        D[j] = D[j] - through
            rows.append(torch.cat([d.reshape(-1) for d in D]))
        return torch.stack(rows)

    def surrogate(self, losses: Sequence[Tensor], raw: Tensor, model: nn.Module,
                  scale: Tensor, coeff: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(S, row weights w, J). Rows are the gradients of `losses`; the aggregator sees them
        scaled by `scale`. S = sum_i coeff_i losses_i, and hooks add g - sum_i coeff_i J_i to the
        gradient its backward pass leaves on the balanced tensors (parameters: after it is
        accumulated into .grad; representation: as it flows through)."""
        self.pending.clear()
        x = self.tensors(model)
        J = self.rows(losses, x)  # (K, n)
        g, w = self.aggregate(scale[:, None] * J, raw)
        corr = (g - coeff @ J).detach()  # (n,)
        offset = 0
        for t in x:
            piece = corr[offset:offset + t.numel()].view_as(t)
            offset += t.numel()
            if self.on == "parameters":
                self.pending[t] = piece
            else:
                t.register_hook(lambda grad, piece=piece: grad + piece)
        if self.on == "representation":
            self.model.outputs = None  # release the forward's activations
        return (coeff * torch.stack(list(losses))).sum(), w * scale, J
