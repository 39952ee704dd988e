"""The metrics: each one's direction and the task kinds it is defined for, read by model
selection, early stopping, `mtl compare`, the plots and `mtl check`."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class MetricFact:
    """A metric's direction (model selection, early stopping, `mtl compare`'s gains) and the
    task kinds it is defined for (`mtl check` refuses it elsewhere)."""

    name: str
    higher_is_better: bool
    task_kinds: frozenset[str]
    doc: str = ""
    selectable: bool = True  # may be train monitor= (a ratio whose ideal is 1 may not)
    grouped: bool = False  # computed within the groups of the task's group= column


def _metrics(*facts: MetricFact) -> dict[str, MetricFact]:
    return {m.name: m for m in facts}


_ANY_TASK = frozenset({"binary", "regression", "multiclass"})
METRICS: dict[str, MetricFact] = _metrics(
    MetricFact("auc", True, frozenset({"binary"}), "area under the ROC curve"),
    MetricFact("logloss", False, frozenset({"binary", "multiclass"}), "mean cross-entropy"),
    MetricFact("accuracy", True, frozenset({"binary", "multiclass"}), "share of exact answers"),
    MetricFact("mse", False, frozenset({"regression"}), "mean squared error"),
    MetricFact("mae", False, frozenset({"regression"}), "mean absolute error"),
    # The training objective of a task (not written in specs; monitored without a metric).
    MetricFact("loss", False, _ANY_TASK, "the task's own training loss"),
    # --- ranking and calibration metrics (training/ranking_metrics.py)
    MetricFact("rmse", False, frozenset({"regression"}), "root of the mean squared error"),
    MetricFact("pr_auc", True, frozenset({"binary"}),
               "average precision: area under the precision-recall curve"),
    MetricFact("calibration", False, frozenset({"binary"}),
               "mean predicted probability over mean label (1 is calibrated; not for monitor=)",
               selectable=False),
    MetricFact("gauc", True, frozenset({"binary"}),
               "AUC within each group= value, averaged weighted by group size", grouped=True),
    MetricFact("ndcg@k", True, frozenset({"binary", "regression"}),
               "NDCG of the top k rows of each group= value (gain: the label)", grouped=True),
    MetricFact("recall@k", True, frozenset({"binary"}),
               "share of a group's positives among its top k rows", grouped=True),
)
MAX_TOP_K = 10_000  # the largest k of ndcg@k and recall@k


def metric_family(name: str) -> str:
    """The METRICS entry a metric name belongs to: `ndcg@10` -> `ndcg@k` (k in 1..MAX_TOP_K);
    any other name is its own (unknown names stay unknown)."""
    base, at, k = name.partition("@")
    if at and k.isdigit() and 1 <= int(k) <= MAX_TOP_K and f"{base}@k" in METRICS:
        return f"{base}@k"
    return name


def top_k(name: str) -> int:
    """The k of `ndcg@10` (a name metric_family maps to an `@k` family)."""
    return int(name.partition("@")[2])

# Task kind -> the metrics a spec may ask of it (derived from METRICS; `loss` is implicit).
TASK_METRICS: dict[str, frozenset[str]] = {
    kind: frozenset(m.name for m in METRICS.values() if kind in m.task_kinds and m.name != "loss")
    for kind in sorted(_ANY_TASK)
}


# Plots (the console/plots feature, training/plots.py): the metrics whose values lie in
# [0, 1] share one panel; every other metric (an error: mse, mae, logloss) gets its own scale.
UNIT_INTERVAL_METRICS: frozenset[str] = frozenset({"auc", "accuracy"})


def higher_is_better(metric: str) -> bool:
    return METRICS[metric_family(metric)].higher_is_better
