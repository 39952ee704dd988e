"""Encoders: the plan's codecs with what fitting learnt (vocabularies, scalers).

Plan-then-apply, like the front end: :meth:`Encoders.fit` (in memory: the training rows
are one chunk) and the streamed fit (:mod:`mtl_dsl.data.streaming`, chunk by chunk) both
feed :class:`Statistics` and finish with :meth:`Encoders.from_statistics`, the one place
vocabularies are ranked and scalers fitted. :meth:`Encoders.encode` applies them to any
frame (validation rows, or new data at prediction time) through data/encoding.py, the
encodings the ONNX serving bundle uses too. `as_dict()` is plain JSON types, as a
checkpoint stores it (docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..language.ir import Spec
from .codecs import Codec, DenseCodec, Plan, SequenceCodec, TablePlan, codec_from_dict
from .encoding import Scaler, Vocab, encode_dense, encode_sequence
from .statistics import DenseStats, Moments, Statistics, collisions, rank
from .values import Frame, check_columns, key_counts


def ranked_vocab(counts: dict[str, int], min_count: int, max_ids: int | None = None
                 ) -> Vocab:
    """An `auto` vocabulary: the kept keys, most frequent first, id 0 for the rest."""
    kept = rank(counts, min_count, max_ids)
    return Vocab("auto", len(kept) + 1, kept)


def fit_vocab(columns: list[np.ndarray], min_count: int) -> Vocab:
    """The vocabulary of some columns' values (as one table's readers would count them)."""
    counts: dict[str, int] = {}
    for c in columns:
        for k, n in key_counts(c).items():
            counts[k] = counts.get(k, 0) + n
    return ranked_vocab(counts, min_count)


def planned_vocab(table: TablePlan, counts: dict[str, int]) -> Vocab:
    """The vocabulary of a planned table: ranked from `counts`, or sized by the spec (a
    hashed table keeps the values `min_count=`/`max_ids=` keep, when they cut any)."""
    if table.rows is None:
        return ranked_vocab(counts, table.min_count, table.max_ids)
    if table.kind == "hash" and (table.min_count > 1 or table.max_ids is not None):
        return Vocab("hash", table.rows, rank(counts, table.min_count, table.max_ids), True)
    return Vocab(table.kind, table.rows)


def fit_scaler(codec: DenseCodec, stats: DenseStats) -> Scaler:
    """The one scaler fit: from a feature's accumulated training statistics."""
    d = len(codec.columns)
    fill = _fill(codec.missing, stats.raw)
    if codec.norm == "none" or stats.rows == 0:
        return Scaler(codec.norm, [0.0] * d, [1.0] * d, codec.missing, fill)
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
    return Scaler(codec.norm, [float(v) for v in shift], [float(v) for v in scale],
                  codec.missing, fill)


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
    # hashed table -> its buckets' collisions on the training rows (`collisions`); a report
    # of the fit, not part of the encoding (not stored with it)
    collisions: dict[str, dict] = field(default_factory=dict)

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
        vocabs = {t.name: planned_vocab(t, stats.counts.get(t.name, {})) for t in plan.tables}
        scalers = {c.name: fit_scaler(c, stats.dense[c.name])
                   for c in plan.codecs if isinstance(c, DenseCodec)}
        hashed = {t.name: collisions(stats.counts.get(t.name, {}),
                                     vocabs[t.name].keys if vocabs[t.name].limited else None,
                                     vocabs[t.name].size)
                  for t in plan.tables if t.kind == "hash"}
        return cls(plan.codecs, vocabs, scalers, hashed)

    def hashing(self) -> dict[str, dict]:
        """Each hashed table's collisions on the training rows (the run log's start record
        and the console print them)."""
        return dict(self.collisions)

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
            return encode_dense(frame, codec.columns, codec.name, self.scalers[codec.name])
        vocab = self.vocabs[codec.table]
        if isinstance(codec, SequenceCodec):
            return encode_sequence(frame[codec.column], vocab, codec.sep, codec.max_len,
                                   codec.column)
        return vocab.encode(frame[codec.column], codec.column)

    def as_dict(self) -> dict:
        return {"features": [c.as_dict() for c in self.codecs],
                "vocabs": {k: v.as_dict() for k, v in self.vocabs.items()},
                "scalers": {k: v.as_dict() for k, v in self.scalers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Encoders":
        vocabs = {k: Vocab.from_dict(v) for k, v in d["vocabs"].items()}
        scalers = {k: Scaler.from_dict(v) for k, v in d["scalers"].items()}
        codecs = tuple(codec_from_dict(f, d["scalers"]) for f in d["features"])
        return cls(codecs, vocabs, scalers)
