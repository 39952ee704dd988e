"""Which rows train, validate and test: seeded, stratified splits of one frame, and the
per-row seeded hash a streamed source is split by (docs/data.md)."""

from __future__ import annotations

import numpy as np

from ..language import registry as reg
from ..language.diagnostics import DataError
from ..language.ir import Spec
from .labels import STRATA
from .values import label_key


def split(n: int, val: float, seed: int, strata: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) row indices; stratified on `strata` when given."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else \
        [np.flatnonzero(strata == v) for v in np.unique(strata)]
    val_rows = []
    for rows in groups:
        k = int(round(val * len(rows)))
        val_rows.append(rng.permutation(rows)[:k])
    val_idx = np.sort(np.concatenate(val_rows)) if val_rows else np.zeros(0, np.int64)
    if n >= 2:  # both sides non-empty, even for tiny data
        if len(val_idx) == 0:
            val_idx = np.array([int(rng.integers(n))])
        elif len(val_idx) == n:
            val_idx = val_idx[1:]
    mask = np.ones(n, bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def split3(n: int, fractions: tuple[float, ...], seed: int, strata: np.ndarray | None = None
           ) -> dict[str, np.ndarray]:
    """Sorted train/val/test rows in the given fractions, per stratum (seeded)."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else \
        [np.flatnonzero(strata == v) for v in np.unique(strata)]
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for rows in groups:
        rows = rng.permutation(rows)
        k_val = int(round(fractions[1] * len(rows)))
        k_test = int(round(fractions[2] * len(rows)))
        parts["val"].append(rows[:k_val])
        parts["test"].append(rows[k_val:k_val + k_test])
        parts["train"].append(rows[k_val + k_test:])
    out = {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
    if n >= 3 and any(len(v) == 0 for v in out.values()):
        raise DataError(f"the data has {n} rows, too few for split={list(fractions)}",
                        hint="every part of the split needs at least one row")
    return out


def split_fractions(spec: Spec) -> tuple[float, ...] | None:
    """The data source's `split=` fractions, if it is a file source that gives them."""
    p = spec.data.params if spec.data is not None else None
    return p.split if isinstance(p, reg.FileSource) else None


def split_rows(spec: Spec, labels: dict[str, np.ndarray], seed: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The spec's (train, validation) rows of one frame; see :func:`split_parts`."""
    parts = split_parts(spec, labels, seed)
    return parts["train"], parts["val"]


def split_parts(spec: Spec, labels: dict[str, np.ndarray], seed: int | None = None
                ) -> dict[str, np.ndarray]:
    """Seeded `train`/`val` (and `test`, with a three-way `split=`) rows of one frame.

    Fractions come from the data source's `split=`, else `train val=`; the seed is
    `train seed=` unless `seed`. Stratified on the `stratify=` label, else on a binary first
    task. A two-way split draws exactly the rows the original `train val=` split drew.
    """
    p = spec.train.params
    seed = p.seed if seed is None else seed
    first = spec.tasks[0]
    strata = labels.get(STRATA)
    if strata is None and first.kind == "binary":
        strata = labels[label_key(first.name)]
    n = len(labels[label_key(first.name)])
    fractions = split_fractions(spec)
    if fractions is None or len(fractions) == 2:
        val = p.val if fractions is None else fractions[1]
        train_rows, val_rows = split(n, val, seed, strata)
        return {"train": train_rows, "val": val_rows}
    return split3(n, fractions, seed, strata)


def _uniform(seed: int, rows: np.ndarray) -> np.ndarray:
    """A seeded uniform draw in [0, 1) per row position (splitmix64), independent of how
    the rows are batched."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign(seed: int, rows: np.ndarray, val: float, test: float) -> np.ndarray:
    """Part of each row by its position in the data: 0 train, 1 validation, 2 test."""
    u = _uniform(seed, rows)
    return np.where(u < val, 1, np.where(u < val + test, 2, 0))


def stream_fractions(spec: Spec) -> tuple[float, float]:
    """(validation, test) fractions of a streamed source split per row."""
    fractions = split_fractions(spec)
    if fractions is None:
        return spec.train.params.val, 0.0
    return fractions[1], fractions[2] if len(fractions) > 2 else 0.0
