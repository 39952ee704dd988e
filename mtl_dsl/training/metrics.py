"""Per-task losses and metrics, and evaluating a model on a whole tensor set.

Model outputs are raw: logits `(B,)` for binary, values `(B,)` for regression,
logits `(B, C)` for multiclass. Every task also reports `loss`, its training
loss on the evaluated rows, so "did training help" is one comparison.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.tensors import TensorSet, label_key, mask_key
from ..language.ir import Task
from ..language.registry import higher_is_better



def task_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits (binary), MSE (regression), cross-entropy (multiclass); batch mean."""
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(output, target)
    if kind == "regression":
        return F.mse_loss(output, target)
    return F.cross_entropy(output, target)


def metric(kind: str, name: str, output: torch.Tensor, target: torch.Tensor) -> float:
    """One metric of one task on full-length outputs; NaN when undefined (AUC of one class)."""
    output, target = output.float(), target
    if name in ("loss", "logloss"):
        return float(task_loss(kind, output, target))
    if name == "auc":
        from torchmetrics.functional.classification import binary_auroc

        t = target.long()
        if t.min() == t.max():
            return math.nan
        return float(binary_auroc(torch.sigmoid(output), t))
    if name == "accuracy":
        pred = (output > 0).to(target.dtype) if kind == "binary" else output.argmax(dim=-1)
        return float((pred == target).float().mean())
    if name == "mse":
        return float(F.mse_loss(output, target))
    if name == "mae":
        return float(F.l1_loss(output, target))
    raise KeyError(name)


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
        mask = data.tensors.get(mask_key(task.name))
        if mask is not None:  # e.g. CVR judged on clicked impressions only
            y, o = y[mask], o[mask]
        names = dict.fromkeys(("loss", *task.params.metrics))
        result[task.name] = {m: metric(task.kind, m, o, y) for m in names}
    return result


def better(name: str, new: float, old: float | None) -> bool:
    """Is `new` an improvement on `old` for metric `name` (NaN never is)?"""
    if new != new:
        return False
    if old is None or old != old:
        return True
    return new > old if higher_is_better(name) else new < old
