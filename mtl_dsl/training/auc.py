"""ROC AUC, computed here rather than imported.

The one metric every binary task reports. torchmetrics' `binary_auroc` gives the same value,
but importing torchmetrics pulls in scipy and costs about 2 s of every `mtl compile --train`
(measured on the benchmark workload, where a whole epoch takes 5 s). AUC is the
Mann-Whitney statistic, which `ranking_metrics.group_auc` already computes per group (ties
counting one half): the plain AUC is that of a single group. tests/test_metrics_auc.py
checks it against torchmetrics on random and tied data.
"""

from __future__ import annotations

import numpy as np
import torch

from .ranking_metrics import group_auc


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUC of `scores` (any monotone transform of the probability: logits do) against 0/1
    `labels`; both 1-D of one length, both classes present (the caller says why not)."""
    y = labels.detach().cpu().numpy()
    value, _ = group_auc(scores.detach().cpu().double().numpy(), y, np.zeros(len(y), np.int64))
    return value
