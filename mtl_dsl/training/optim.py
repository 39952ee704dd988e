"""The optimizer, its parameter groups, and gradient clipping.

Weight decay (`train weight_decay=`) shrinks weights only: a bias, a norm's scale and shift
and a weighting method's own parameters (uncertainty's log-variances, ...) keep their value
unless the loss moves them, because decaying them changes what the layer computes rather
than regularising it (a LayerNorm's scale pulled to 0 silences its layer). Embedding tables
are a group of their own with `embedding_l2=` as their decay (docs/language.md, "Optimizer,
schedule and clipping", says why decay rather than a penalty on the rows of each batch).

Adam and AdamW use torch's fused kernels where torch has them for the device (CPU since
torch 2.4, CUDA), else `foreach`; both are deterministic on CPU, run to run. The optimizers
are torch.optim's own classes: their first `step` imports torch's compiler, which torch.optim
wraps every step for (torch 2.13 has no public switch against that import;
docs/benchmarks.md gives its cost).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..language.ir import Spec
from ..model.blocks import ExpertNorm
from .embeddings.engine import EmbeddingEngine
from .weighting.base import Weighting

# Every normalisation layer torch.nn exports, and ours: their scale and shift are never
# decayed (tests/test_schedules.py checks that no public `...Norm` class of torch.nn is missing).
NORMS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d,
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm, ExpertNorm)


@dataclass(frozen=True)
class DecayGroups:
    """The model's trainable parameters split by what weight decay does to them."""

    decay: tuple[nn.Parameter, ...]  # weights of Linear layers and experts
    plain: tuple[nn.Parameter, ...]  # biases and norms: never decayed
    embeddings: tuple[nn.Parameter, ...]  # tables: `embedding_l2=`

    @classmethod
    def of(cls, model: nn.Module, skip: tuple[nn.Parameter, ...] = ()) -> "DecayGroups":
        """Each trainable parameter once, by the module that owns it and its name; `skip`:
        the embedding engine's own tables (training/embeddings/engine.py), which it updates."""
        decay, plain, tables, seen = [], [], [], {id(q) for q in skip}
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                    tables.append(p)
                elif isinstance(module, NORMS) or name.endswith("bias") or p.ndim <= 1:
                    plain.append(p)
                else:
                    decay.append(p)
        return cls(tuple(decay), tuple(plain), tuple(tables))


def param_groups(spec: Spec, model: nn.Module, weighting: Weighting,
                 skip: tuple[nn.Parameter, ...] = ()) -> list[dict]:
    """Non-empty groups with their weight decay; weighting parameters last, never decayed."""
    p, g = spec.train.params, DecayGroups.of(model, skip)
    groups = [{"params": list(g.decay), "weight_decay": p.weight_decay, "name": "weights"},
              {"params": list(g.plain), "weight_decay": 0.0, "name": "biases and norms"},
              {"params": list(g.embeddings), "weight_decay": p.embedding_l2,
               "name": "embeddings"},
              {"params": list(weighting.parameters()), "weight_decay": 0.0,
               "name": "weighting"}]
    return [group for group in groups if group["params"]]


@functools.cache
def fused_available(device: torch.device) -> bool:
    """Whether torch has fused Adam kernels for `device` (CPU ones since torch 2.4), found by
    asking torch: one step of a fused Adam on a one-element parameter there. torch checks
    `fused=True` at the first step and raises RuntimeError where it has no kernel; no public
    function lists the devices. Cached: one probe per device and process."""
    p = nn.Parameter(torch.zeros(1, device=device))
    p.grad = torch.zeros(1, device=device)
    try:
        torch.optim.Adam([p], fused=True).step()
    except RuntimeError:
        return False
    return True


def make_optimizer(spec: Spec, model: nn.Module, weighting: Weighting,
                   device: torch.device | None = None, skip: tuple[nn.Parameter, ...] = ()
                   ) -> torch.optim.Optimizer:
    """Adam / AdamW (fused where available, else foreach) or SGD with momentum 0.9, over
    every trainable parameter but `skip` (the embedding engine's tables)."""
    p = spec.train.params
    groups = param_groups(spec, model, weighting, skip)
    if p.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=p.lr, momentum=0.9, foreach=True)
    cls = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
    device = device or next((q.device for q in model.parameters()), torch.device("cpu"))
    if fused_available(device):
        return cls(groups, lr=p.lr, fused=True)
    return cls(groups, lr=p.lr, foreach=True)


def clip_gradients(spec: Spec, model: nn.Module, tables: EmbeddingEngine | None = None
                   ) -> float | None:
    """Scale the model's gradients to global norm <= `train clip=`; the norm before, or None.

    Called after backward, so a gradient method's aggregated update is what is clipped. The
    norm includes the embedding engine's gradient of the rows the step touched (`tables`):
    torch's `clip_grad_norm_` cannot take sparse gradients, so the dense part's norm and the
    tables' are combined here, in its arithmetic (coefficient clip / (norm + 1e-6), at most 1)."""
    clip = spec.train.params.clip
    if clip is None:
        return None
    skip = {id(q) for q in tables.owned()} if tables is not None else set()
    params = [q for q in model.parameters() if q.grad is not None and id(q) not in skip]
    rows = tables.sq_norm() if tables is not None else 0.0
    if not rows:  # no table gradient beside the model's: torch's own call
        return float(nn.utils.clip_grad_norm_(params, clip, foreach=True))
    dense = nn.utils.get_total_norm([q.grad for q in params], foreach=True) if params else \
        torch.zeros(())
    total = torch.sqrt(dense.double() ** 2 + rows).float()
    if params:
        nn.utils.clip_grads_with_norm_(params, clip, total, foreach=True)
    factor = clip / (float(total) + 1e-6)
    if factor < 1:
        tables.scale(factor)
    return float(total)


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict, model: nn.Module,
                   weighting: Weighting) -> None:
    """Restore a resume.pt's optimizer state, also one saved before the decay groups (two
    groups: every trainable model parameter, then the weighting's): its per-parameter state
    (Adam's moments) is moved to the groups of today, which decay from here on."""
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        saved = _regrouped(saved, optimizer, model, weighting)
    optimizer.load_state_dict(saved)


def _regrouped(saved: dict, optimizer: torch.optim.Optimizer, model: nn.Module,
               weighting: Weighting) -> dict:
    from .resume import ResumeError

    old = [q for q in model.parameters() if q.requires_grad] + list(weighting.parameters())
    if sum(len(g["params"]) for g in saved["param_groups"]) != len(old):
        raise ResumeError("cannot resume: the optimizer's saved parameters do not match the "
                          "model's", hint="start a new run")
    where = {id(q): i for i, q in enumerate(old)}
    groups, state, k = [], {}, 0
    for group in optimizer.param_groups:
        indices = list(range(k, k + len(group["params"])))
        for q, i in zip(group["params"], indices):
            if where[id(q)] in saved["state"]:
                state[i] = saved["state"][where[id(q)]]
        groups.append({**{n: v for n, v in group.items() if n != "params"},
                       "params": indices})
        k += len(indices)
    return {"state": state, "param_groups": groups}
