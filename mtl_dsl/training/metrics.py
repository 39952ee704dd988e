"""Per-task losses and metrics, and evaluating a model on a whole tensor set.

Model outputs are raw: logits `(B,)` for binary, values `(B,)` for regression,
logits `(B, C)` for multiclass. Every task also reports `loss`, its training
loss on the evaluated rows, so "did training help" is one comparison.

A metric that cannot be computed (AUC of one class, no rows, outputs that are not finite) is
an :class:`Undefined`: NaN to arithmetic and comparisons, so it never wins model selection,
but with its reason, which messages print and metrics.jsonl records (`notes`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.tensors import TensorSet
from ..data.values import group_key, label_key, mask_key
from ..language.ir import Task
from ..language.registry import higher_is_better
from . import ranking_metrics as ranking
from .auc import auc


class Undefined(float):
    """A metric that cannot be computed, and why: NaN as a number; formatted (`f"{v:.4f}"`)
    as `n/a (reason)`, so no caller prints a bare `nan`."""

    reason: str

    def __new__(cls, reason: str) -> "Undefined":
        value = super().__new__(cls, math.nan)
        value.reason = reason
        return value

    def __getnewargs__(self) -> tuple[str]:
        return (self.reason,)

    def __format__(self, spec: str) -> str:
        return f"n/a ({self.reason})"

    def __repr__(self) -> str:
        return f"Undefined({self.reason!r})"


class Noted(float):
    """A metric computed with a caveat (gauc: groups of one class skipped): a number, whose
    note metrics.jsonl records (`notes`) like an Undefined's reason."""

    reason: str

    def __new__(cls, value: float, reason: str) -> "Noted":
        out = super().__new__(cls, value)
        out.reason = reason
        return out

    def __getnewargs__(self) -> tuple[float, str]:
        return (float(self), self.reason)


def notes(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, str]]:
    """`{task: {metric: reason}}` for every metric of `metrics` that could not be computed,
    or was computed with a note."""
    out: dict[str, dict[str, str]] = {}
    for task, values in metrics.items():
        for name, v in values.items():
            if v != v or isinstance(v, Noted):
                out.setdefault(task, {})[name] = v.reason if isinstance(v, (Undefined, Noted)) \
                    else "not a number"
    return out


def plain(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The metrics as plain floats (a checkpoint holds no custom class)."""
    return {t: {k: float(v) for k, v in values.items()} for t, values in metrics.items()}


def task_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits (binary), MSE (regression), cross-entropy (multiclass); batch mean."""
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(output, target)
    if kind == "regression":
        return F.mse_loss(output, target)
    return F.cross_entropy(output, target)


def metric(kind: str, name: str, output: torch.Tensor, target: torch.Tensor,
           groups: torch.Tensor | None = None) -> float:
    """One metric of one task on full-length outputs; an :class:`Undefined` with its reason
    when it cannot be computed (no rows, AUC of one class, outputs that are not finite).
    `groups`: the ids of the task's group= column, for the grouped metrics."""
    output, target = output.float(), target
    if len(target) == 0:
        return Undefined("no rows")
    if not bool(torch.isfinite(output).all()):
        return Undefined("the model's outputs are not finite")
    if ranking.handles(name):
        return _ranked(kind, name, output, target, groups)
    if name in ("loss", "logloss"):
        return float(task_loss(kind, output, target))
    if name == "auc":
        t = target.long()
        if t.min() == t.max():
            return Undefined(f"every label is {int(t[0])}: AUC needs both classes")
        return auc(output, t)
    if name == "accuracy":
        pred = (output > 0).to(target.dtype) if kind == "binary" else output.argmax(dim=-1)
        return float((pred == target).float().mean())
    if name == "mse":
        return float(F.mse_loss(output, target))
    if name == "mae":
        return float(F.l1_loss(output, target))
    raise KeyError(name)


def _ranked(kind: str, name: str, output: torch.Tensor, target: torch.Tensor,
            groups: torch.Tensor | None) -> float:
    """A metric of training/ranking_metrics.py, its note kept (Undefined or Noted)."""
    score = output.double().cpu().numpy()
    prob = torch.sigmoid(output.double()).cpu().numpy() if kind == "binary" else score
    ids = groups.cpu().numpy() if groups is not None else None
    value, note = ranking.compute(name, score, target.double().cpu().numpy(), ids, prob)
    if value is None:
        return Undefined(note or "cannot be computed")
    return Noted(value, note) if note else value


def outputs(model: torch.nn.Module, data: TensorSet, batch: int = 8192
            ) -> dict[str, torch.Tensor]:
    """The model's raw outputs on every row of `data`, in order (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        with torch.no_grad():
            for b in data.batches(batch, shuffle=False):
                for task, out in model(b).items():
                    chunks.setdefault(task, []).append(out)
    finally:
        model.train(was_training)
    return {t: torch.cat(c) for t, c in chunks.items()}


def evaluate(model: torch.nn.Module, data: TensorSet, tasks: tuple[Task, ...] | list[Task],
             batch: int = 8192) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` for each task's declared metrics, plus its `loss`."""
    out = outputs(model, data, batch)
    result = {}
    for task in tasks:
        y, o = data.tensors[label_key(task.name)], out[task.name]
        g = data.tensors.get(group_key(task.params.group)) if task.params.group else None
        mask = data.tensors.get(mask_key(task.name))
        if mask is not None:  # e.g. CVR judged on clicked impressions only
            y, o = y[mask], o[mask]
            g = g[mask] if g is not None else None
        names = dict.fromkeys(("loss", *task.params.metrics))
        values = {m: metric(task.kind, m, o, y, g) for m in names}
        if mask is not None and len(y) == 0:
            values = {m: Undefined(f"no rows where {task.where.name} is 1") for m in names}
        result[task.name] = values
    return result


def better(name: str, new: float, old: float | None) -> bool:
    """Is `new` an improvement on `old` for metric `name` (NaN never is)?"""
    if new != new:
        return False
    if old is None or old != old:
        return True
    return new > old if higher_is_better(name) else new < old
