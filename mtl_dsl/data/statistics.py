"""What fitting learns from training rows, accumulated chunk by chunk.

Data held in memory is one chunk; a streamed source feeds its record batches one at a
time. Either way the same accumulators see the same values, so the fitted vocabularies
and scalers agree (exactly for vocabularies, to rounding for moments): vocabulary counts
per table and, per dense feature, running moments merged with Chan's parallel update,
which is stable where a sum of squares is not (docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .codecs import DenseCodec, Plan
from .encoding import hash_ids
from .values import Frame, key_counts


def rank(counts: dict[str, int], min_count: int, max_ids: int | None = None) -> list[str]:
    """The kept keys, most frequent first, at most `max_ids` of them; ties in key order, so
    ids do not depend on row order or chunking. Key i gets id i + 1 (0 = unknown or
    missing)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [k for k, n in ranked if n >= min_count][:max_ids]


def collisions(counts: dict[str, int], kept: list[str] | None, size: int) -> dict:
    """How a hashed table's training values share its buckets: `values` distinct values
    (those `kept`, when rare ones are cut), `colliding` of them in a bucket with another, the
    share of those (`rate`) and the share of the training rows they cover (`rows_rate`)."""
    keys = list(counts) if kept is None else kept
    buckets = hash_ids(keys, size)
    _, inverse, per = np.unique(buckets, return_inverse=True, return_counts=True)
    shared = per[inverse] > 1
    n = np.array([counts[k] for k in keys], np.int64)
    rows = int(sum(counts.values()))
    return {"buckets": size - 1, "values": len(keys), "colliding": int(shared.sum()),
            "rate": float(shared.mean()) if keys else 0.0,
            "rows_rate": float(n[shared].sum() / rows) if rows else 0.0}


def collision_line(table: str, c: dict, where: str = "training rows") -> str:
    """`hash user: 9,812 values of the training rows in 1,000 buckets; 2.3% share a bucket
    (4.1% of the rows)`: what training and `mtl check` say of a hashed table."""
    return (f"hash {table}: {c['values']:,} values of the {where} in {c['buckets']:,} "
            f"buckets; {100 * c['rate']:.1f}% share a bucket ({100 * c['rows_rate']:.1f}% "
            "of the rows)")


@dataclass
class Moments:
    """Per column: how many values, their mean, and the sum of squared deviations."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, d: int) -> "Moments":
        return cls(np.zeros(d), np.zeros(d), np.zeros(d))

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        """The moments of the present (non-NaN) values of each column of x (N, d)."""
        ok = ~np.isnan(x)
        count = ok.sum(0).astype(np.float64)
        with np.errstate(all="ignore"):
            mean = np.where(count > 0, np.where(ok, x, 0.0).sum(0) / count, 0.0)
        dev = np.where(ok, x - mean, 0.0)
        return cls(count, mean, (dev * dev).sum(0))

    @classmethod
    def constant(cls, count: np.ndarray, value: np.ndarray) -> "Moments":
        """`count` copies of `value` per column (the fill of missing cells)."""
        return cls(np.asarray(count, np.float64), np.asarray(value, np.float64),
                   np.zeros(len(value)))

    def merge(self, other: "Moments") -> "Moments":
        """The moments of both sets of values together."""
        if not self.count.any():
            return other
        if not other.count.any():
            return self
        n = self.count + other.count
        with np.errstate(all="ignore"):
            delta = other.mean - self.mean
            mean = np.where(n > 0, self.mean + delta * other.count / n, 0.0)
            m2 = self.m2 + other.m2 + np.where(n > 0, delta * delta * self.count
                                               * other.count / n, 0.0)
        return Moments(n, mean, m2)


@dataclass
class DenseStats:
    """A dense feature's training values: rows seen, moments of the present values (and
    of their log1p for norm=log), and their range."""

    rows: int
    raw: Moments
    logs: Moments | None
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def empty(cls, codec: DenseCodec) -> "DenseStats":
        d = len(codec.columns)
        logs = Moments.empty(d) if codec.norm == "log" else None
        return cls(0, Moments.empty(d), logs, np.full(d, np.inf), np.full(d, -np.inf))

    def add(self, x: np.ndarray) -> None:
        """One chunk's (B, d) values, NaN where missing."""
        ok = ~np.isnan(x)
        self.rows += len(x)
        self.raw = self.raw.merge(Moments.of(x))
        if self.logs is not None:  # norm=log values are checked non-negative
            self.logs = self.logs.merge(Moments.of(np.log1p(np.where(ok, x, np.nan))))
        if len(x):
            self.low = np.minimum(self.low, np.where(ok, x, np.inf).min(0))
            self.high = np.maximum(self.high, np.where(ok, x, -np.inf).max(0))

    @property
    def absent(self) -> np.ndarray:
        """Missing cells per column."""
        return self.rows - self.raw.count


@dataclass
class Statistics:
    """The accumulators of one plan: key counts per ranked table, stats per dense feature."""

    plan: Plan
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dense: dict[str, DenseStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.plan.tables:
            if t.counted:
                self.counts.setdefault(t.name, {})
        for c in self.plan.codecs:
            if isinstance(c, DenseCodec):
                self.dense.setdefault(c.name, DenseStats.empty(c))

    def add(self, frame: Frame, rows: np.ndarray | None = None) -> None:
        """Feed one chunk: the `rows` of `frame` (all rows when None). Dense values are
        checked over the whole frame first, so an error names the frame's row."""
        for codec in self.plan.codecs:
            if isinstance(codec, DenseCodec):
                x = codec.matrix(frame)
                self.dense[codec.name].add(x if rows is None else x[rows])
            elif codec.table in self.counts:
                col = frame[codec.column]
                cells = codec.cells(frame if rows is None else {codec.column: col[rows]})
                counts = self.counts[codec.table]
                for k, n in key_counts(cells).items():
                    counts[k] = counts.get(k, 0) + n
