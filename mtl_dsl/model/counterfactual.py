"""ESCM² (Wang et al., SIGIR 2022): the counterfactual CVR risk as a regulariser.

ESMM learns pCVR only through pCTCVR = pCTR * pCVR over the impressions; ESCM² adds the
CVR risk on clicked rows reweighted to the whole impression space, with the CTR tower's
prediction as the propensity (equations in docs/architectures.md, "ESCM²"):

* IPS: R = 1/|D| sum_D o e / t
* DR:  R = 1/|D| sum_D [e_hat + o (e - e_hat) / t] + 1/|D| sum_D o (e - e_hat)^2 / t

with o the click, e = BCE(conversion, pCVR) per row, t = max(pCTR, clip) held constant
(no gradient into the CTR tower through 1/t) and e_hat the imputation tower's estimate of
e on every impression. Each part learns from its own term, as in doubly robust joint
learning: the CVR tower from the DR risk (e_hat held fixed), the imputation tower from its
squared error (e held fixed).

The language writes it as a transfer, `transfer ctr -> cvr = counterfactual(mode=dr)`,
and the compiled model adds it to its aux losses like AITM's label constraint. Nothing
here runs at inference: the imputation tower is a training-time block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..language.graph import TaskGraph
from ..language.ir import Spec
from ..language.registry import CounterfactualParams
from .blocks import MLP, TaskHead
from .implementations import Call, net_options


def propensity(ctr_logit: Tensor, clip: float) -> Tensor:
    """t = max(sigmoid(ctr), clip), detached: the risk reweights rows; it does not train CTR."""
    return torch.sigmoid(ctr_logit.detach()).clamp_min(clip)  # (B,)


def conversion_error(cvr_logit: Tensor, conversion: Tensor, click: Tensor) -> Tensor:
    """e per row: BCE of the conversion on clicked rows, 0 elsewhere (unclicked rows have no
    observed conversion, and may hold a missing label)."""
    clicked = click > 0.5
    target = torch.where(clicked, conversion, torch.zeros_like(conversion))
    e = F.binary_cross_entropy_with_logits(cvr_logit, target, reduction="none")
    return torch.where(clicked, e, torch.zeros_like(e))  # (B,)


def ips_risk(ctr_logit: Tensor, cvr_logit: Tensor, click: Tensor, conversion: Tensor,
             clip: float) -> Tensor:
    """1/|D| sum_D o e / t: the clicked rows' CVR loss, each weighted by 1/pCTR."""
    o = (click > 0.5).to(cvr_logit.dtype)
    e = conversion_error(cvr_logit, conversion, click)
    return (o * e / propensity(ctr_logit, clip)).mean()


def dr_risk(ctr_logit: Tensor, cvr_logit: Tensor, click: Tensor, conversion: Tensor,
            clip: float, imputed: Tensor) -> Tensor:
    """The doubly robust risk plus the imputation tower's loss (see the module docstring)."""
    o = (click > 0.5).to(cvr_logit.dtype)
    t = propensity(ctr_logit, clip)
    e = conversion_error(cvr_logit, conversion, click)
    fixed_hat = imputed.detach()
    risk = (fixed_hat + o * (e - fixed_hat) / t).mean()
    imputation = (o * (e.detach() - imputed) ** 2 / t).mean()
    return risk + imputation


# --------------------------------------------------------------------------
# The regularisers of a spec, their imputation towers, and their losses
# --------------------------------------------------------------------------

IMPUTATION = "imputation>"  # ModuleDict key prefix ('>' is never in a user's name)


@dataclass(frozen=True)
class Regulariser:
    """One `transfer CTR -> CVR = counterfactual(...)`: the aux loss `name`, its two tasks,
    its parameters and (mode=dr) the env key its imputation tower reads."""

    name: str
    ctr: str
    cvr: str
    params: CounterfactualParams
    source: str | None = None

    @property
    def key(self) -> str:
        """Where the imputation tower lives in the model's towers and heads."""
        return IMPUTATION + self.cvr


def regularisers(spec: Spec, graph: TaskGraph) -> tuple[Regulariser, ...]:
    """The counterfactual transfers of a validated spec; the imputation tower of a DR one
    reads what the CVR tower reads (the paper's towers share the embedding layer)."""
    out = []
    for t in spec.transfers:
        if t.kind != "counterfactual":
            continue
        ctr, cvr = (r.name for r in t.chain)
        source = None
        if t.params.mode == "dr":
            source = spec.resolve(spec.task(cvr).tower.name)
            if graph.kind(source) == "tower":
                source = spec.resolve(spec.node(source).input.name)
        out.append(Regulariser(f"counterfactual:{t.name}", ctr, cvr, t.params, source))
    return tuple(out)


def imputations(regs: tuple[Regulariser, ...], widths: dict[str, int]
                ) -> list[tuple[str, Call, Call]]:
    """(key, imputation MLP, its scalar output layer) per DR regulariser: the compiler keeps
    them beside the other towers and heads, so that a checkpoint's state_dict loads into the
    standalone file (tools/serving/standalone.py) unchanged."""
    out = []
    for r in regs:
        if r.source is not None:
            net = r.params.imputation_net()
            width = net.widths[-1] if net.widths else widths[r.source]
            out.append((r.key, Call(MLP, (widths[r.source],), net_options(net)),
                        Call(TaskHead, (width, 1))))
    return out


def risks(regs: tuple[Regulariser, ...], out: dict[str, Tensor], kept: dict[str, Tensor],
          labels: dict[str, Tensor], towers: nn.ModuleDict, heads: nn.ModuleDict
          ) -> dict[str, Tensor]:
    """name -> weight * risk for these outputs, the kept imputation inputs and the labels
    (the CTR task's label is the click, the CVR task's the conversion)."""
    losses = {}
    for r in regs:
        p = r.params
        args = (out[r.ctr], out[r.cvr], labels[r.ctr], labels[r.cvr], p.clip)
        if r.source is None:
            risk = ips_risk(*args)
        else:
            risk = dr_risk(*args, heads[r.key](towers[r.key](kept[r.source])))
        losses[r.name] = p.weight * risk
    return losses
