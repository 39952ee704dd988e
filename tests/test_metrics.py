"""The metrics of training/ranking_metrics.py against hand computations and plain-Python
references (no sklearn), their Undefined cases, and their diagnostics in specs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mtl_dsl.api import check_file, check_text
from mtl_dsl.training.metrics import Noted, Undefined, metric, notes


def m(kind: str, name: str, score, y, groups=None) -> float:
    g = torch.tensor(groups, dtype=torch.long) if groups is not None else None
    return metric(kind, name, torch.tensor(score, dtype=torch.float32),
                  torch.tensor(y, dtype=torch.float32), g)


def ref_auc(score, y) -> float:
    """Share of (positive, negative) pairs ordered right, ties counting a half."""
    pairs = [(a, b) for a, b in itertools.product(range(len(y)), repeat=2) if y[a] == 1 and y[b] == 0]
    return sum(1.0 if score[a] > score[b] else 0.5 if score[a] == score[b] else 0.0
               for a, b in pairs) / len(pairs)


def ref_ap(score, y) -> float:
    """Precision at each distinct threshold times the recall gained there."""
    total, out, prev_recall = sum(y), 0.0, 0.0
    for th in sorted(set(score), reverse=True):
        picked = [i for i in range(len(y)) if score[i] >= th]
        tp = sum(y[i] for i in picked)
        out += (tp / total - prev_recall) * tp / len(picked)
        prev_recall = tp / total
    return out


def ref_ndcg(score, rel, k) -> float:
    order = sorted(range(len(rel)), key=lambda i: -score[i])  # stable: file order on ties
    dcg = sum(rel[i] / math.log2(p + 2) for p, i in enumerate(order[:k]))
    ideal = sum(r / math.log2(p + 2) for p, r in enumerate(sorted(rel, reverse=True)[:k]))
    return dcg / ideal


def test_rmse_pr_auc_and_calibration_by_hand():
    assert m("regression", "rmse", [1.0, 2.0, 4.0], [1.0, 4.0, 0.0]) == pytest.approx(
        math.sqrt((0 + 4 + 16) / 3))
    # scores 0.9 (1), 0.8 (0), 0.7 (1), 0.1 (0): AP = 1/2 * 1 + 1/2 * 2/3
    logits = np.log(np.array([0.9, 0.8, 0.7, 0.1]) / (1 - np.array([0.9, 0.8, 0.7, 0.1])))
    assert m("binary", "pr_auc", logits, [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # calibration: mean p = 0.625, mean label = 0.5
    assert m("binary", "calibration", logits, [1, 0, 1, 0]) == pytest.approx(0.625 / 0.5, rel=1e-6)


def test_pr_auc_and_gauc_match_references_on_random_data_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(4, 40))
        score = rng.integers(0, 5, n).astype(float)  # many ties
        y = rng.integers(0, 2, n).astype(float)
        groups = rng.integers(0, 4, n)
        if y.sum() > 0:
            assert m("binary", "pr_auc", score, y) == pytest.approx(ref_ap(list(score), list(y)))
        usable = [g for g in set(groups) if 0 < y[groups == g].sum() < (groups == g).sum()]
        if not usable:
            continue
        weights = [(groups == g).sum() for g in usable]
        aucs = [ref_auc(list(score[groups == g]), list(y[groups == g])) for g in usable]
        assert m("binary", "gauc", score, y, groups) == pytest.approx(np.average(aucs, weights=weights))


def test_gauc_skips_one_class_groups_and_says_how_many():
    score, y, groups = [0.3, 0.1, 0.5, 0.2, 0.9], [1, 0, 1, 1, 0], [0, 0, 1, 1, 2]
    value = m("binary", "gauc", score, y, groups)
    assert value == 1.0 and isinstance(value, Noted)
    assert value.reason == "2 of 3 groups skipped (one class)"
    assert notes({"t": {"gauc": value}}) == {"t": {"gauc": value.reason}}
    none = m("binary", "gauc", [0.1, 0.2], [1, 1], [0, 1])
    assert isinstance(none, Undefined) and "holds one class" in none.reason
    assert f"{none:.4f}".startswith("n/a (")


def test_ndcg_and_recall_at_k_within_groups():
    # group 0: scores order rows 2, 0, 1 with gains 0, 3, 1 (graded: regression labels)
    score, rel, groups = [0.5, 0.1, 0.9, 0.7, 0.2], [3.0, 1.0, 0.0, 0.0, 2.0], [0, 0, 0, 1, 1]
    g0 = ref_ndcg([0.5, 0.1, 0.9], [3.0, 1.0, 0.0], 2)
    g1 = ref_ndcg([0.7, 0.2], [0.0, 2.0], 2)
    assert g0 == pytest.approx(3 / math.log2(3) / (3 + 1 / math.log2(3)))
    assert m("regression", "ndcg@2", score, rel, groups) == pytest.approx((g0 + g1) / 2)
    # recall@1: group 0 positives {0, 1}, top-1 is row 2 -> 0; group 1 positive {4}, top-1 row 3 -> 0
    y = [1, 1, 0, 0, 1]
    assert m("binary", "recall@1", score, y, groups) == 0.0
    assert m("binary", "recall@2", score, y, groups) == pytest.approx((1 / 2 + 1) / 2)
    skipped = m("binary", "recall@2", score, [1, 1, 0, 0, 0], groups)
    assert skipped == pytest.approx(0.5) and skipped.reason == "1 of 2 groups skipped (no positive)"
    rng = np.random.default_rng(1)
    for _ in range(10):
        s, r, k = rng.random(12), rng.integers(0, 4, 12).astype(float), int(rng.integers(1, 6))
        if r.sum():
            assert m("regression", f"ndcg@{k}", s, r, [0] * 12) == pytest.approx(ref_ndcg(s, r, k))


def test_metrics_that_cannot_be_computed_say_why():
    cases = [("binary", "pr_auc", [0.1, 0.2], [0, 0], None, "average precision needs a positive"),
             ("binary", "calibration", [0.1, 0.2], [0, 0], None, "divides by the mean label"),
             ("binary", "ndcg@3", [0.1, 0.2], [0, 0], [0, 1], "NDCG needs a relevant row"),
             ("binary", "recall@3", [0.1], [1], None, "needs the task's group= column"),
             ("regression", "ndcg@3", [0.1], [-1.0], [0], "NDCG gains must be 0 or more"),
             ("regression", "rmse", [], [], None, "no rows")]
    for kind, name, score, y, groups, reason in cases:
        value = m(kind, name, score, y, groups)
        assert isinstance(value, Undefined) and reason in value.reason, (name, value)


SPEC = """model m
data csv("r.csv")
label y, r
feature a = dense(1)
tower t = mlp(a, 4)
tower u = mlp(a, 4)
task k: binary(label=y, METRICS) from t
task q: regression(label=r) from u
train TRAIN
"""


def diagnostics(metrics: str, train: str = "epochs=1") -> list:
    found = check_text(SPEC.replace("METRICS", metrics).replace("TRAIN", train)).diagnostics
    return [d for d in found if d.code != "E502"]  # r.csv is not there: the spec is the test


def test_metric_diagnostics_list_what_applies():
    assert diagnostics('metrics=[auc, gauc, "ndcg@10", "recall@5", pr_auc, calibration], '
                       'group=a', "monitor=k.gauc") == []
    found = diagnostics('metrics=[rmse, "ndcg@0"], group=a', "monitor=k.rmse")
    assert [d.code for d in found] == ["E302", "E302"], found  # no follow-on E207 on monitor
    assert "does not apply to binary task" in found[0].message
    assert "pr_auc" in found[0].hint and "ndcg@k" in found[0].hint and "rmse" not in found[0].hint
    assert "unknown metric 'ndcg@0'" in found[1].message
    grouped = diagnostics("metrics=[gauc]")
    assert [(d.code, d.message) for d in grouped] == [("E306", "metric 'gauc' of task 'k' needs group=")]
    monitor = diagnostics("metrics=[calibration]", "monitor=k.calibration")
    assert monitor[0].code == "E207" and "not better when higher or lower" in monitor[0].message


def test_a_group_column_missing_from_the_data_is_reported_at_the_task(tmp_path):
    (tmp_path / "r.csv").write_text("a,y,r\n1,0,2.5\n2,1,3.5\n")
    text = SPEC.replace("METRICS", "metrics=[gauc], group=usr").replace("TRAIN", "epochs=1")
    (tmp_path / "s.mtl").write_text(text)
    found = check_file(tmp_path / "s.mtl").diagnostics
    assert [(d.code, d.message, d.span.line) for d in found] == [
        ("E504", "group= of task 'k' reads column 'usr', which is not in the data", 7)]
