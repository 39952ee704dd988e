"""ROC AUC, computed here rather than imported.

The one metric every binary task reports. torchmetrics' `binary_auroc` gives the same value,
but importing torchmetrics pulls in scipy and costs about 2 s of every `mtl compile --train`
(measured on the benchmark workload, where a whole epoch takes 5 s); this is 20 lines of torch.
AUC is the Mann-Whitney statistic: the probability that a random positive row scores above a
random negative one, ties counting one half, so tied scores get the mean of their ranks.
tests/test_metrics_auc.py checks it against torchmetrics on random and tied data.
"""

from __future__ import annotations

import torch


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUC of `scores` (any monotone transform of the probability: logits do) against 0/1
    `labels`; both 1-D of one length, both classes present (the caller says why not)."""
    order = torch.argsort(scores)
    ordered = scores[order]
    positive = labels[order] > 0
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True,
                                                return_counts=True)
    last = torch.cumsum(counts, 0).double()  # rank of each tie group's last row (1-based)
    mean_rank = (last - (counts.double() - 1) / 2)[group]
    pos = int(positive.sum())
    neg = len(labels) - pos
    return float((mean_rank[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))
