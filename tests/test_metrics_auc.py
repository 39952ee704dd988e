"""Our AUC (mtl_dsl.training.auc) against torchmetrics' binary_auroc, the oracle."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from mtl_dsl.training.auc import auc


@pytest.mark.parametrize("seed", range(5))
def test_equals_torchmetrics_on_random_scores(seed):
    g = torch.Generator().manual_seed(seed)
    n = 1 + seed * 997
    labels = (torch.rand(n + 2, generator=g) < 0.3).long()
    labels[:2] = torch.tensor([0, 1])
    logits = torch.randn(n + 2, generator=g) + labels  # informative scores
    assert auc(logits, labels) == pytest.approx(float(binary_auroc(torch.sigmoid(logits),
                                                                   labels)), abs=1e-6)


def test_ties_count_one_half():
    # every score tied: AUC 0.5 whatever the labels; and a hand-computed mixed case
    assert auc(torch.zeros(6), torch.tensor([0, 1, 0, 1, 1, 0])) == pytest.approx(0.5)
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8])
    labels = torch.tensor([0, 0, 1, 1])
    # pairs (pos, neg): (0.4, 0.1)=1, (0.4, 0.4)=0.5, (0.8, 0.1)=1, (0.8, 0.4)=1 -> 3.5 / 4
    assert auc(scores, labels) == pytest.approx(3.5 / 4)
    g = torch.Generator().manual_seed(7)
    coarse = torch.randint(0, 5, (3000,), generator=g).float()  # heavy ties
    y = (torch.rand(3000, generator=g) < 0.2 + 0.1 * coarse).long()
    assert auc(coarse, y) == pytest.approx(float(binary_auroc(coarse / 4, y)), abs=1e-6)


def test_perfect_and_reversed_rankings():
    y = torch.tensor([0, 0, 1, 1])
    assert auc(torch.tensor([1.0, 2, 3, 4]), y) == 1.0
    assert auc(torch.tensor([4.0, 3, 2, 1]), y) == 0.0
