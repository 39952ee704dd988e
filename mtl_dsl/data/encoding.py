"""The encodings: raw cells -> the model's inputs, one implementation for training and serving.

A fitted table (`Vocab`) maps a column's values to ids: `auto` looks a value's key up (an
unseen or missing value -> 0), `hash` takes 1 + crc32(key) mod (size - 1) (missing -> 0;
with `limited`, a value not among the kept `keys` -> 0 too), `fixed` checks the column
holds ids in [0, size). A fitted `Scaler` normalises a dense
feature: a missing value becomes its fill, then log1p for norm=log, then (x - shift) /
scale, as float32. A sequence's cells are split into items, each item encoded by its
table, and the last `max_len` ids kept, -1 after them (`encode_sequence`).

The data stage (data/encoders.py `Encoders.encode`, for training, evaluation and
prediction) and the ONNX serving bundle's encoder (tools/serving/bundle.py `BundleEncoder`,
which `mtl predict --model x.onnx` runs without torch) both encode through this module,
from what a checkpoint or a bundle stores (`as_dict` / `from_dict`), so a served model reads
its inputs exactly as it was trained. It imports numpy, the cell helpers of data/values.py
and the error class of language/diagnostics.py (standard library only): no torch, no spec
(docs/data.md, docs/export.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..language.diagnostics import DataError
from .values import Frame, dense_matrix, factorize, first_row, is_missing, numeric, pad_last, \
    sequence_cells


@dataclass
class Vocab:
    """One embedding table's rows: `auto` (id = 1 + frequency rank, 0 = unknown or missing),
    `fixed` (the column holds ids 0..size-1) or `hash` (id = 1 + crc32(value) mod
    (size - 1), 0 = missing, and with `limited` 0 for a value not among `keys`)."""

    kind: str  # "auto" | "fixed" | "hash"
    size: int  # rows of the table
    keys: list[str] = field(default_factory=list)  # auto: the key of id 1, 2, ...; hash: kept
    limited: bool = False  # hash: only `keys` are hashed (min_count=, max_ids=)

    @cached_property
    def index(self) -> dict[str, int]:
        """Key -> id of an `auto` vocabulary."""
        return {k: i + 1 for i, k in enumerate(self.keys)}

    def encode(self, col: np.ndarray, name: str) -> np.ndarray:
        """The int64 id of every cell of column `name`; each distinct value keyed once."""
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
            ids = hash_ids(keys, self.size)
            if self.limited:
                ids[[k not in self.index for k in keys]] = 0
            return ids
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
        return {"kind": self.kind, "size": self.size, "keys": list(self.keys),
                **({"limited": True} if self.limited else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["kind"], d["size"], list(d["keys"]), bool(d.get("limited", False)))


def hash_ids(keys: list[str], size: int) -> np.ndarray:
    """The id of each key in a hashed table of `size` rows: 1 + crc32(key) mod (size - 1)."""
    buckets = size - 1
    return np.array([1 + zlib.crc32(k.encode()) % buckets for k in keys], np.int64)


@dataclass
class Scaler:
    """Per column `(f(x) - shift) / scale`, f = log1p for norm=log, identity otherwise;
    missing values become `fill` (the training mean, or 0; None: a missing value is an
    error) before scaling."""

    norm: str
    shift: list[float]
    scale: list[float]
    missing: str = "error"
    fill: list[float] | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A checked (N, size) float64 matrix (NaN where missing) -> float32 inputs."""
        if self.fill is not None:
            x = np.where(np.isnan(x), np.asarray(self.fill), x)
        x = np.log1p(x) if self.norm == "log" else x
        return ((x - np.asarray(self.shift)) / np.asarray(self.scale)).astype(np.float32)

    def as_dict(self) -> dict:
        return {"norm": self.norm, "shift": self.shift, "scale": self.scale,
                "missing": self.missing, "fill": self.fill}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(d["norm"], list(d["shift"]), list(d["scale"]), d.get("missing", "error"),
                   None if d.get("fill") is None else list(d["fill"]))


def encode_dense(frame: Frame, columns: tuple[str, ...] | list[str], feature: str,
                 scaler: Scaler) -> np.ndarray:
    """A dense feature's (N, size) float32 inputs: its columns read as checked numbers
    (data/values.py `dense_matrix`: numeric, finite, non-negative for norm=log, missing
    only where the scaler fills it), then scaled."""
    return scaler.apply(dense_matrix(frame, tuple(columns), feature, scaler.norm,
                                     scaler.missing))


def encode_sequence(col: np.ndarray, vocab: Vocab, sep: str, max_len: int,
                    name: str) -> np.ndarray:
    """A list column's (N, max_len) int64 ids: `sep`-joined text (items stripped, empty
    items dropped) or Parquet lists, every item encoded by the table, the last `max_len`
    ids of a row kept left-aligned, -1 after them."""
    values, lengths = sequence_cells(col, sep)
    return pad_last(vocab.encode(values, name), lengths, max_len)
