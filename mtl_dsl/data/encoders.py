"""Encoders: the plan's codecs with what fitting learnt (vocabularies, scalers).

Plan-then-apply, like the front end: :meth:`Encoders.fit` (in memory: the training rows
are one chunk) and the streamed fit (:mod:`mtl_dsl.data.streaming`, chunk by chunk) both
feed :class:`Statistics` and finish with :meth:`Encoders.from_statistics`, the one place
vocabularies are ranked and scalers fitted. :meth:`Encoders.encode` applies them to any
frame (validation rows, or new data at prediction time). `as_dict()` is plain JSON types,
as a checkpoint stores it (docs/data.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..language.diagnostics import DataError
from ..language.ir import Spec
from .codecs import Codec, DenseCodec, Plan, SequenceCodec, TablePlan, codec_from_dict
from .statistics import DenseStats, Moments, Statistics, rank
from .values import Frame, check_columns, factorize, first_row, is_missing, key_counts, \
    numeric, pad_last, sequence_cells


@dataclass
class Vocab:
    """One embedding table's rows: `auto` (id = 1 + frequency rank, 0 = unknown or missing),
    `fixed` (the column holds ids 0..size-1) or `hash` (id = 1 + crc32(value) mod
    (size - 1), 0 = missing)."""

    kind: str  # "auto" | "fixed" | "hash"
    size: int  # rows of the table
    keys: list[str] = field(default_factory=list)  # auto: the key of id 1, 2, ...

    @classmethod
    def ranked(cls, counts: dict[str, int], min_count: int) -> "Vocab":
        kept = rank(counts, min_count)
        return cls("auto", len(kept) + 1, kept)

    @classmethod
    def fit(cls, columns: list[np.ndarray], min_count: int) -> "Vocab":
        """The vocabulary of some columns' values (as one table's readers would count them)."""
        counts: dict[str, int] = {}
        for c in columns:
            for k, n in key_counts(c).items():
                counts[k] = counts.get(k, 0) + n
        return cls.ranked(counts, min_count)

    @classmethod
    def planned(cls, table: TablePlan, counts: dict[str, int]) -> "Vocab":
        """The vocabulary of a planned table: sized by the spec, or ranked from `counts`."""
        if table.rows is None:
            return cls.ranked(counts, table.min_count)
        return cls(table.kind, table.rows)

    @cached_property
    def index(self) -> dict[str, int]:
        """Key -> id of an `auto` vocabulary."""
        return {k: i + 1 for i, k in enumerate(self.keys)}

    def encode(self, col: np.ndarray, name: str) -> np.ndarray:
        if self.kind == "fixed":
            return self._fixed(col, name)
        ids = np.zeros(len(col), np.int64)
        present = ~is_missing(col)
        if present.any():
            keys, inverse = factorize(col[present])
            ids[present] = self._ids(keys.tolist())[inverse]
        return ids

    def _ids(self, keys: list[str]) -> np.ndarray:
        """The id of each distinct key."""
        if self.kind == "hash":
            buckets = self.size - 1
            return np.array([1 + zlib.crc32(k.encode()) % buckets for k in keys], np.int64)
        return np.array([self.index.get(k, 0) for k in keys], np.int64)

    def _fixed(self, col: np.ndarray, name: str) -> np.ndarray:
        what = f"ids of a vocab={self.size} feature"
        if col.dtype.kind in "iu":  # the common case, checked without a float copy
            bad = (col < 0) | (col >= self.size)
            if not bad.any():
                return col.astype(np.int64, copy=False)
        x = numeric(col, name, what)
        bad = np.isnan(x) | (x != np.round(x)) | (x < 0) | (x >= self.size)
        if bad.any():
            i = first_row(bad)
            raise DataError(f"column '{name}' holds {what}: integers in [0, {self.size}); "
                            f"row {i + 1} has {col[i]!r}",
                            hint="raise vocab=, or use vocab=auto to build the vocabulary "
                                 "from the data, or hash=N")
        return x.astype(np.int64)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "size": self.size, "keys": list(self.keys)}


@dataclass
class Scaler:
    """Per-column `(f(x) - shift) / scale`, f = log1p for norm=log, identity otherwise;
    missing values become `fill` (the training mean, or 0) before scaling."""

    norm: str
    shift: list[float]
    scale: list[float]
    missing: str = "error"
    fill: list[float] | None = None

    @classmethod
    def fit(cls, codec: DenseCodec, stats: DenseStats) -> "Scaler":
        """The one scaler fit: from a feature's accumulated training statistics."""
        d = len(codec.columns)
        fill = _fill(codec.missing, stats.raw)
        if codec.norm == "none" or stats.rows == 0:
            return cls(codec.norm, [0.0] * d, [1.0] * d, codec.missing, fill)
        f = np.zeros(d) if fill is None else np.asarray(fill)
        absent = stats.absent
        if codec.norm == "minmax":
            lo = np.where(absent > 0, np.minimum(stats.low, f), stats.low)
            hi = np.where(absent > 0, np.maximum(stats.high, f), stats.high)
            shift, scale = lo, hi - lo
        else:
            present = stats.logs if stats.logs is not None else stats.raw
            g = np.log1p(f) if codec.norm == "log" else f
            m = present.merge(Moments.constant(absent, g))
            shift, scale = m.mean, np.sqrt(m.m2 / stats.rows)
        scale = np.where(scale > 1e-12, scale, 1.0)  # a constant column maps to 0
        return cls(codec.norm, [float(v) for v in shift], [float(v) for v in scale],
                   codec.missing, fill)

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.fill is not None:
            x = np.where(np.isnan(x), np.asarray(self.fill), x)
        x = np.log1p(x) if self.norm == "log" else x
        return ((x - np.asarray(self.shift)) / np.asarray(self.scale)).astype(np.float32)

    def as_dict(self) -> dict:
        return {"norm": self.norm, "shift": self.shift, "scale": self.scale,
                "missing": self.missing, "fill": self.fill}


def _fill(missing: str, raw: Moments) -> list[float] | None:
    """What a missing cell becomes: None (missing=error), 0, or the training mean (0 for a
    column with no present value)."""
    if missing == "error":
        return None
    mean = np.where(raw.count > 0, raw.mean, 0.0)
    return [0.0 if missing == "zero" or not np.isfinite(v) else float(v) for v in mean]


@dataclass
class Encoders:
    """Everything learnt from training data that prediction must re-apply: each feature's
    codec (so a checkpoint encodes a new frame without the spec), one vocabulary per
    embedding table and one scaler per dense feature."""

    codecs: tuple[Codec, ...]
    vocabs: dict[str, Vocab]  # embedding-table owner -> vocabulary
    scalers: dict[str, Scaler]  # dense feature -> statistics

    @classmethod
    def fit(cls, spec: Spec, frame: Frame, rows: np.ndarray) -> "Encoders":
        """Fit on the training `rows` of a frame held in memory (one chunk)."""
        stats = Statistics(Plan.from_spec(spec))
        stats.add(frame, rows)
        return cls.from_statistics(stats)

    @classmethod
    def from_statistics(cls, stats: Statistics) -> "Encoders":
        """Rank every vocabulary and fit every scaler from accumulated statistics."""
        plan = stats.plan
        vocabs = {t.name: Vocab.planned(t, stats.counts.get(t.name, {})) for t in plan.tables}
        scalers = {c.name: Scaler.fit(c, stats.dense[c.name])
                   for c in plan.codecs if isinstance(c, DenseCodec)}
        return cls(plan.codecs, vocabs, scalers)

    def vocab_sizes(self) -> dict[str, int]:
        return {t: v.size for t, v in self.vocabs.items()}

    @property
    def columns(self) -> list[str]:
        return [c for codec in self.codecs for c in codec.columns]

    def encode(self, frame: Frame) -> dict[str, np.ndarray]:
        """Feature name -> encoded array for every row of `frame`."""
        check_columns({c: f"feature '{codec.name}'" for codec in self.codecs
                       for c in codec.columns}, frame.keys())
        return {codec.name: self._encode(codec, frame) for codec in self.codecs}

    def _encode(self, codec: Codec, frame: Frame) -> np.ndarray:
        if isinstance(codec, DenseCodec):
            return self.scalers[codec.name].apply(codec.matrix(frame))
        vocab = self.vocabs[codec.table]
        if isinstance(codec, SequenceCodec):
            values, lengths = sequence_cells(frame[codec.column], codec.sep)
            return pad_last(vocab.encode(values, codec.column), lengths, codec.max_len)
        return vocab.encode(frame[codec.column], codec.column)

    def as_dict(self) -> dict:
        return {"features": [c.as_dict() for c in self.codecs],
                "vocabs": {k: v.as_dict() for k, v in self.vocabs.items()},
                "scalers": {k: v.as_dict() for k, v in self.scalers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Encoders":
        vocabs = {k: Vocab(v["kind"], v["size"], list(v["keys"])) for k, v in d["vocabs"].items()}
        scalers = {k: Scaler(v["norm"], list(v["shift"]), list(v["scale"]),
                             v.get("missing", "error"),
                             None if v.get("fill") is None else list(v["fill"]))
                   for k, v in d["scalers"].items()}
        codecs = tuple(codec_from_dict(f, d["scalers"]) for f in d["features"])
        return cls(codecs, vocabs, scalers)
