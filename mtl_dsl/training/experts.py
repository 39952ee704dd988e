"""Expert diagnostics: how each gate uses its experts, per epoch, and `experts.png`.

The question every MMoE user asks ("does each task use its experts, or did a gate collapse
onto one?") is answered on a bounded sample of the validation rows (the first
EXPERT_SAMPLE_ROWS) at each epoch end, from one forward pass that keeps the gates' weights
(the plan stores them under `WKEY + gate`, model/gates.py) and the expert groups' outputs.
The result is the `experts` entry of the epoch record in metrics.jsonl:

    {"gates": {gate: {"experts": [labels], "mean": [mean weight per expert],
                      "entropy": mean per-row entropy, "entropy_of_mean": entropy of "mean",
                      "negligible": share of experts below NEGLIGIBLE_SHARE / n,
                      "top": label of the expert with the largest mean weight,
                      "top_rows": share of rows where it takes over COLLAPSE_WEIGHT}},
     "groups": {group: {"max_cosine": largest pairwise cosine of two experts' outputs}},
     "warnings": [text, ...]}

A gate collapses when `top_rows` > COLLAPSE_ROWS (one expert takes most of the weight for most
rows; a top-1 gate that routes rows to different experts does not); two experts are
near-identical when the cosine of their outputs, centred over the sample, is above
IDENTICAL_COSINE. Each warning is printed on stderr once per run and kept in every record
where it holds. The thresholds are registry facts (language/registry/experts.py). `experts.png`, the
heat map of the last record, is drawn by training/plots.py.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor

from ..data.tensors import TensorSet
from ..language import registry as reg
from ..language.ir import Spec
from ..model.gates import WKEY
from .callbacks import Callback

MIXING = ("softmax", "task", "dselect")  # gate forms that mix experts


def expert_gates(model) -> dict[str, list[tuple[str, int]]]:
    """Gate -> the expert groups it mixes, each with its count, for every built gate that
    mixes experts (MetaHeac's critic gates mix critics and are left out)."""
    spec: Spec = model.spec
    out = {}
    for gate in spec.gates:
        if gate.name in model.used and model.graph.form(gate.name) in MIXING:
            groups = [spec.resolve(r.name) for r in gate.over]
            out[gate.name] = [(g, spec.node(g).count) for g in groups]
    return out


def labels(groups: list[tuple[str, int]]) -> list[str]:
    """'e[0]', 'e[1]', ... per group of several experts; the group's name for one."""
    return [g if n == 1 else f"{g}[{i}]" for g, n in groups for i in range(n)]


def gate_stats(w: Tensor, names: list[str]) -> dict:
    """The statistics of one gate's (N, n) weights (see the module docstring)."""
    n = w.shape[1]
    mean = w.mean(0)
    top = int(mean.argmax())
    return {"experts": names, "mean": [round(v, 6) for v in mean.tolist()],
            "entropy": float(-torch.xlogy(w, w).sum(1).mean()),
            "entropy_of_mean": float(-torch.xlogy(mean, mean).sum()),
            "negligible": float((mean < reg.NEGLIGIBLE_SHARE / n).float().mean()),
            "top": names[top],
            "top_rows": float((w[:, top] > reg.COLLAPSE_WEIGHT).float().mean())}


def max_cosine(e: Tensor) -> tuple[float, tuple[int, int]]:
    """The largest cosine between two experts' (N, n, D) outputs, each centred over the
    rows and flattened, and which pair; a constant expert has cosine 0 with every other."""
    x = (e - e.mean(0, keepdim=True)).transpose(0, 1).flatten(1)  # (n, N*D)
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = x @ x.T
    cos.fill_diagonal_(-2.0)
    i = int(cos.argmax())
    return float(cos.flatten()[i]), divmod(i, cos.shape[0])


class ExpertWatch(Callback):
    """Computes the `experts` entry of each epoch record (`record`); `experts.png` is drawn
    from the last such record with the run's other plots (training/plots.py, `draw_all`).
    It only reads the model, in eval mode without gradients, so it draws no random numbers
    and a resumed run is unchanged."""

    def __init__(self, model, rows: TensorSet):
        self.gates = expert_gates(model)
        self.groups = sorted({g for groups in self.gates.values() for g, n in groups if n > 1})
        size = min(len(rows), reg.EXPERT_SAMPLE_ROWS)
        self.sample = rows.take(np.arange(size)) if self.gates and size else None
        self.warned: set[str] = set()

    @torch.no_grad()
    def record(self, model) -> dict:
        """{"experts": ...} for the epoch record, or {} for a model without gates."""
        if self.sample is None:
            return {}
        was = model.training
        model.eval()
        batch = next(iter(self.sample.batches(len(self.sample), shuffle=False)))
        _, kept = model.forward_keeping(batch, (*(WKEY + g for g in self.gates), *self.groups))
        model.train(was)
        gates = {g: gate_stats(kept[WKEY + g].float(), labels(groups))
                 for g, groups in self.gates.items()}
        groups, warnings = {}, []
        for g, s in gates.items():
            if s["top_rows"] > reg.COLLAPSE_ROWS:
                warnings.append(f"gate '{g}' collapsed: expert {s['top']} takes over "
                                f"{reg.COLLAPSE_WEIGHT:g} of the weight in "
                                f"{s['top_rows']:.0%} of the rows")
        for name in self.groups:
            cos, (i, j) = max_cosine(kept[name].float())
            groups[name] = {"max_cosine": round(cos, 6)}
            if cos > reg.IDENTICAL_COSINE:
                warnings.append(f"experts {name}[{i}] and {name}[{j}] are near-identical "
                                f"(output cosine {cos:.3f})")
        self._warn(warnings)
        return {"experts": {"gates": gates, "groups": groups, "warnings": warnings}}

    def _warn(self, warnings: list[str]) -> None:
        """Each warning on stderr once per run (keyed by its text up to the numbers)."""
        for text in warnings:
            key = text.split(":")[0] if "collapsed" in text else text.split(" (")[0]
            if key not in self.warned:
                self.warned.add(key)
                print(f"warning: {text} (training/experts.py)", file=sys.stderr)
