"""Metrics beyond the per-row ones of training/metrics.py: rmse, average precision
(`pr_auc`), calibration, and the grouped ranking metrics `gauc`, `ndcg@k` and `recall@k`,
computed within the groups of a task's `group=` column (a user's impressions).

Each function takes numpy arrays (float64 scores, labels, int64 group ids) and returns
`(value, note)`: value None means the metric cannot be computed and the note says why; a
value with a note (groups skipped) is reported with the note (metrics.jsonl `notes`).
Everything is vectorised over groups (sorts and bincounts, no loop per group), so a
validation set with 100k users costs a few sorts. The definitions, with the conventions a
reader needs to reproduce them, are in docs/language.md ("Metrics").
"""

from __future__ import annotations

import numpy as np

from ..language.registry import metric_family, top_k

Result = tuple[float | None, str | None]

NAMES = frozenset({"rmse", "pr_auc", "calibration", "gauc", "ndcg@k", "recall@k"})


def handles(name: str) -> bool:
    return metric_family(name) in NAMES


def compute(name: str, score: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
            prob: np.ndarray) -> Result:
    """One metric: `score` the raw output (a logit or a value), `prob` the probability a
    binary task predicts (its sigmoid), `groups` the ids of the task's group= column."""
    family = metric_family(name)
    if family == "rmse":
        return float(np.sqrt(np.mean((score - y) ** 2))), None
    if family == "pr_auc":
        return average_precision(score, y)
    if family == "calibration":
        return calibration(prob, y)
    if groups is None:
        return None, f"{name} needs the task's group= column"
    if family == "gauc":
        return group_auc(score, y, groups)
    if family == "ndcg@k":
        return ndcg_at_k(score, y, groups, top_k(name))
    return recall_at_k(score, y, groups, top_k(name))


def average_precision(score: np.ndarray, y: np.ndarray) -> Result:
    """Sum over distinct score thresholds (high to low) of precision times the recall
    gained there; tied scores are one threshold (sklearn's average_precision_score)."""
    positives = float(y.sum())
    if positives == 0:
        return None, "every label is 0: average precision needs a positive"
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie run
    tp = np.cumsum(t)[last]
    precision, recall = tp / (last + 1), tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision)), None


def calibration(prob: np.ndarray, y: np.ndarray) -> Result:
    """Mean predicted probability over the mean label: 1 is calibrated, 2 predicts twice
    as many positives as there are."""
    mean = float(y.mean())
    if mean == 0:
        return None, "every label is 0: calibration divides by the mean label"
    return float(prob.mean()) / mean, None


def _runs(groups: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in `order` (sorted by group): each row's group index (0, 1, ... in group
    order) and its 0-based position within its group."""
    g = groups[order]
    first = np.r_[True, g[1:] != g[:-1]]
    index = np.arange(len(g))
    start = np.maximum.accumulate(np.where(first, index, 0))
    return np.cumsum(first) - 1, index - start


def group_auc(score: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Result:
    """Each group's AUC (Mann-Whitney with average ranks for ties), averaged weighted by
    the group's rows; groups holding one class are skipped and counted in the note."""
    order = np.lexsort((score, groups))
    gid, pos = _runs(groups, order)
    s, t = score[order], y[order]
    run = np.cumsum(np.r_[True, (gid[1:] != gid[:-1]) | (s[1:] != s[:-1])]) - 1
    ranks = (np.bincount(run, pos + 1.0) / np.bincount(run))[run]
    rows = np.bincount(gid).astype(float)
    pos_n = np.bincount(gid, t)
    neg_n = rows - pos_n
    both = (pos_n > 0) & (neg_n > 0)
    if not both.any():
        return None, f"each of the {len(rows)} groups holds one class: gauc needs both"
    rank_sum = np.bincount(gid, ranks * t)[both]
    p, n = pos_n[both], neg_n[both]
    auc = (rank_sum - p * (p + 1) / 2) / (p * n)
    skipped = int((~both).sum())
    note = f"{skipped} of {len(rows)} groups skipped (one class)" if skipped else None
    return float(np.average(auc, weights=rows[both])), note


def _dcg(rel: np.ndarray, groups: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """Per group: the sum over its first k rows in `order` of rel / log2(position + 2)."""
    gid, pos = _runs(groups, order)
    gain = np.where(pos < k, rel[order] / np.log2(pos + 2.0), 0.0)
    return np.bincount(gid, gain)


def ndcg_at_k(score: np.ndarray, rel: np.ndarray, groups: np.ndarray, k: int) -> Result:
    """Mean over groups of DCG@k / ideal DCG@k, the gain of a row its label (linear); rows
    of equal score keep their file order. Groups whose labels are all 0 are skipped."""
    if (rel < 0).any():
        return None, "a label is negative: NDCG gains must be 0 or more"
    actual = _dcg(rel, groups, np.lexsort((-score, groups)), k)
    ideal = _dcg(rel, groups, np.lexsort((-rel, groups)), k)
    ok = ideal > 0
    if not ok.any():
        return None, "every label is 0 in every group: NDCG needs a relevant row"
    skipped = int((~ok).sum())
    note = f"{skipped} of {len(ok)} groups skipped (no relevant row)" if skipped else None
    return float(np.mean(actual[ok] / ideal[ok])), note


def recall_at_k(score: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int) -> Result:
    """Mean over groups of the share of the group's positives among its k highest
    scores; groups without a positive are skipped."""
    order = np.lexsort((-score, groups))
    gid, pos = _runs(groups, order)
    hits = np.bincount(gid, np.where(pos < k, y[order], 0.0))
    positives = np.bincount(gid, y[order])
    ok = positives > 0
    if not ok.any():
        return None, "every label is 0: recall needs a positive"
    skipped = int((~ok).sum())
    note = f"{skipped} of {len(ok)} groups skipped (no positive)" if skipped else None
    return float(np.mean(hits[ok] / positives[ok])), note
