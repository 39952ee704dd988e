"""From a frame to tensors: checked labels, a seeded split, encoders fitted on training rows.

The pipeline is plan-then-apply, like the front end: :meth:`Encoders.fit` learns
every vocabulary and normalisation statistic from the *training* rows only, and
:meth:`Encoders.encode` applies them to any frame (validation, or new data at
prediction time). Everything is encoded once into contiguous tensors; a batch is
a slice of a shuffled copy of them (no per-sample Dataset, no collate).

Batch keys: each feature name (dense: float32 ``(B, size)``, sparse: int64 ``(B,)``
ids, 0 = out of vocabulary or missing) and ``label:TASK`` (float32 ``(B,)``, int64
for multiclass). Every data problem is a :class:`DataError` naming the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .diagnostics import DataError, did_you_mean
from .graph import table_of
from .ir import Spec
from .sources import Frame, load_frame, source_columns

Batch = dict[str, torch.Tensor]
ROWS_HINT = "rows are counted from 1, not counting a header line"


def label_key(task: str) -> str:
    return f"label:{task}"


# --------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------

def needed_columns(spec: Spec) -> dict[str, str]:
    """Every column the spec reads -> what reads it (for messages)."""
    out: dict[str, str] = {}
    for f in spec.features:
        for c in f.columns:
            out.setdefault(c, f"feature '{f.name}'")
    for t in spec.tasks:
        out.setdefault(t.label.name, f"the label of task '{t.name}'")
    return out


def check_columns(needed: dict[str, str], present) -> None:
    present = list(present)
    missing = [c for c in needed if c not in set(present)]
    if missing:
        c = missing[0]
        more = f" ({len(missing)} columns missing)" if len(missing) > 1 else ""
        raise DataError(f"column '{c}' is not in the data; {needed[c]} reads it{more}",
                        hint=did_you_mean(c, present) or
                        f"the data has: {', '.join(present[:12])}"
                        + (" ..." if len(present) > 12 else ""))


def load(spec: Spec) -> Frame:
    """The spec's data source, only the columns it needs (checked before reading rows)."""
    if spec.data is None:
        raise DataError("the spec names no data source", hint="add a `data` line or pass --data")
    needed = needed_columns(spec)
    check_columns(needed, source_columns(spec.data, spec.base_dir))
    return load_frame(spec.data, spec.base_dir, list(needed))


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _numeric(col: np.ndarray, name: str, what: str) -> np.ndarray:
    """A column as float64 (None -> NaN), or a DataError naming the first non-number."""
    if col.dtype.kind in "biuf":
        return col.astype(np.float64, copy=False)
    try:
        return np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        for i, v in enumerate(col):
            try:
                float(v if v is not None else "nan")
            except (TypeError, ValueError):
                raise DataError(f"column '{name}' ({what}) must be numeric; row {i + 1} "
                                f"has {v!r}", hint=ROWS_HINT) from None
        raise


def _no_nan(x: np.ndarray, name: str, what: str) -> None:
    bad = np.isnan(x)
    if bad.any():
        raise DataError(f"column '{name}' ({what}) has {int(bad.sum())} missing value(s), "
                        f"the first at row {_first(bad) + 1}",
                        hint="fill or drop missing values before training")


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------

def encode_labels(spec: Spec, frame: Frame) -> dict[str, np.ndarray]:
    """`label:TASK` -> checked label array (float32; int64 for multiclass)."""
    return {label_key(t.name): _label(t.kind, t.label.name, frame[t.label.name],
                                      getattr(t.params, "classes", None), t.name)
            for t in spec.tasks}


def _label(kind: str, name: str, col: np.ndarray, classes: int | None, task: str
           ) -> np.ndarray:
    what = f"label of {kind} task '{task}'"
    y = _numeric(col, name, what)
    _no_nan(y, name, what)
    if kind == "binary":
        bad = (y != 0) & (y != 1)
        if bad.any():
            i = _first(bad)
            raise DataError(f"column '{name}' ({what}) must be 0 or 1; row {i + 1} has "
                            f"{y[i]:g}", hint=ROWS_HINT)
        return y.astype(np.float32)
    if kind == "multiclass":
        bad = (y != np.round(y)) | (y < 0) | (y >= classes)
        if bad.any():
            i = _first(bad)
            raise DataError(f"column '{name}' ({what}) must hold class ids 0..{classes - 1}; "
                            f"row {i + 1} has {y[i]:g}",
                            hint=f"the task declares classes={classes}")
        return y.astype(np.int64)
    return y.astype(np.float32)


# --------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Encoders: vocabularies and normalisation statistics (plain JSON types)
# --------------------------------------------------------------------------

def _key(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _canon(values: np.ndarray) -> np.ndarray:
    """Values as strings, so 7, 7.0 and '7' are one category (the keys of a vocabulary)."""
    if values.dtype.kind in "biu":
        return values.astype(np.int64).astype(str)
    if values.dtype.kind == "f":
        whole = values == np.round(values)
        if whole.all():
            return values.astype(np.int64).astype(str)
        return np.where(whole, values.astype(np.int64).astype(str), values.astype(str))
    return np.array([_key(v) for v in values], dtype=str)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical key of each distinct value, index of each value's distinct value)."""
    try:
        uniq, inverse = np.unique(values, return_inverse=True)
    except TypeError:  # an object column mixing numbers and text
        uniq, inverse = np.unique(np.array([_key(v) for v in values], dtype=str),
                                  return_inverse=True)
    return _canon(uniq), inverse.reshape(-1)


def _missing(col: np.ndarray) -> np.ndarray:
    if col.dtype.kind == "f":
        return np.isnan(col)
    if col.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in col], bool)
    return np.zeros(len(col), bool)


@dataclass
class Vocab:
    """One embedding table's rows: `auto` (id = 1 + frequency rank, 0 = unknown) or `fixed`."""

    kind: str  # "auto" | "fixed"
    size: int  # rows of the table
    keys: list[str] = field(default_factory=list)  # auto: the key of id 1, 2, ...
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, columns: list[np.ndarray], min_count: int) -> "Vocab":
        counts: dict[str, int] = {}
        for c in columns:
            keys, inverse = _factorize(c[~_missing(c)])
            for k, n in zip(keys.tolist(), np.bincount(inverse, minlength=len(keys)).tolist()):
                counts[k] = counts.get(k, 0) + n
        # most frequent first; ties in key order, so the ids do not depend on row order
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [k for k, n in ranked if n >= min_count]
        return cls("auto", len(kept) + 1, kept)

    def encode(self, col: np.ndarray, name: str) -> np.ndarray:
        if self.kind == "fixed":
            return self._fixed(col, name)
        if self._index is None:
            self._index = {k: i + 1 for i, k in enumerate(self.keys)}
        ids = np.zeros(len(col), np.int64)
        present = ~_missing(col)
        if present.any():
            keys, inverse = _factorize(col[present])
            table = np.array([self._index.get(k, 0) for k in keys.tolist()], np.int64)
            ids[present] = table[inverse]
        return ids

    def _fixed(self, col: np.ndarray, name: str) -> np.ndarray:
        what = f"ids of a vocab={self.size} feature"
        x = _numeric(col, name, what)
        bad = np.isnan(x) | (x != np.round(x)) | (x < 0) | (x >= self.size)
        if bad.any():
            i = _first(bad)
            raise DataError(f"column '{name}' holds {what}: integers in [0, {self.size}); "
                            f"row {i + 1} has {col[i]!r}",
                            hint="raise vocab=, or use vocab=auto to build the vocabulary "
                                 "from the data")
        return x.astype(np.int64)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "size": self.size, "keys": list(self.keys)}


@dataclass
class Scaler:
    """Per-column `(f(x) - shift) / scale`, f = log1p for norm=log, identity otherwise."""

    norm: str
    shift: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, x: np.ndarray, norm: str) -> "Scaler":  # x: (N, size), training rows
        d = x.shape[1]
        if norm == "none" or len(x) == 0:
            return cls(norm, [0.0] * d, [1.0] * d)
        if norm == "minmax":
            lo, hi = x.min(axis=0), x.max(axis=0)
            shift, scale = lo, hi - lo
        else:
            x = np.log1p(x) if norm == "log" else x
            shift, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # a constant column maps to 0
        return cls(norm, [float(v) for v in shift], [float(v) for v in scale])

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.log1p(x) if self.norm == "log" else x
        return ((x - np.asarray(self.shift)) / np.asarray(self.scale)).astype(np.float32)

    def as_dict(self) -> dict:
        return {"norm": self.norm, "shift": self.shift, "scale": self.scale}


@dataclass
class Encoders:
    """Everything learnt from training data that prediction must re-apply.

    `features` describes each feature (kind, columns, table) so a checkpoint's
    encoders can encode a new frame without the spec; `as_dict()` is plain JSON.
    """

    features: list[dict]
    vocabs: dict[str, Vocab]  # embedding-table owner -> vocabulary
    scalers: dict[str, Scaler]  # dense feature -> statistics

    @classmethod
    def fit(cls, spec: Spec, frame: Frame, rows: np.ndarray) -> "Encoders":
        features, vocabs, scalers = [], {}, {}
        index = {f.name: f for f in spec.features}
        for f in spec.features:
            cols = list(f.columns)
            if f.kind == "dense":
                x = _dense(frame, cols, f.name, f.params.norm)
                scalers[f.name] = Scaler.fit(x[rows], f.params.norm)
                features.append({"name": f.name, "kind": "dense", "columns": cols})
            else:
                table = table_of(spec, f)
                features.append({"name": f.name, "kind": "sparse", "columns": cols,
                                 "table": table})
        for table in {x["table"] for x in features if x["kind"] == "sparse"}:
            owner = index[table].params
            users = [x for x in features if x.get("table") == table]
            if owner.vocab == "auto":
                vocabs[table] = Vocab.fit([frame[x["columns"][0]][rows] for x in users],
                                          owner.min_count)
            else:
                vocabs[table] = Vocab("fixed", owner.vocab)
        return cls(features, vocabs, scalers)

    def vocab_sizes(self) -> dict[str, int]:
        return {t: v.size for t, v in self.vocabs.items()}

    @property
    def columns(self) -> list[str]:
        return [c for f in self.features for c in f["columns"]]

    def encode(self, frame: Frame) -> dict[str, np.ndarray]:
        """Feature name -> encoded array for every row of `frame`."""
        check_columns({c: f"feature '{f['name']}'" for f in self.features for c in f["columns"]},
                      frame.keys())
        out = {}
        for f in self.features:
            if f["kind"] == "dense":
                s = self.scalers[f["name"]]
                out[f["name"]] = s.apply(_dense(frame, f["columns"], f["name"], s.norm))
            else:
                col = f["columns"][0]
                out[f["name"]] = self.vocabs[f["table"]].encode(frame[col], col)
        return out

    def as_dict(self) -> dict:
        return {"features": self.features,
                "vocabs": {k: v.as_dict() for k, v in self.vocabs.items()},
                "scalers": {k: v.as_dict() for k, v in self.scalers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Encoders":
        vocabs = {k: Vocab(v["kind"], v["size"], list(v["keys"])) for k, v in d["vocabs"].items()}
        return cls(list(d["features"]), vocabs,
                   {k: Scaler(v["norm"], list(v["shift"]), list(v["scale"]))
                    for k, v in d["scalers"].items()})


def _dense(frame: Frame, cols: list[str], feature: str, norm: str) -> np.ndarray:
    """The checked (N, size) float64 matrix of a dense feature."""
    what = f"dense feature '{feature}'"
    parts = []
    for c in cols:
        x = _numeric(frame[c], c, what)
        _no_nan(x, c, what)
        if norm == "log" and (x < 0).any():
            i = _first(x < 0)
            raise DataError(f"column '{c}' ({what}, norm=log) must be non-negative; row "
                            f"{i + 1} has {x[i]:g}", hint="use norm=standard for signed values")
        parts.append(x)
    return np.stack(parts, axis=1) if parts else np.zeros((0, 0))


# --------------------------------------------------------------------------
# Tensors and batches
# --------------------------------------------------------------------------

@dataclass
class TensorSet:
    """Encoded rows as contiguous tensors of equal length; `rows` are frame row indices."""

    tensors: Batch
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device) -> "TensorSet":
        return TensorSet({k: v.to(device) for k, v in self.tensors.items()}, self.rows)

    def take(self, index) -> "TensorSet":
        idx = torch.as_tensor(index, dtype=torch.long)
        return TensorSet({k: v[idx].contiguous() for k, v in self.tensors.items()},
                         self.rows[np.asarray(index)])

    def batches(self, size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[Batch]:
        """Slices of one shuffled copy (a single gather per tensor per epoch)."""
        data = self.tensors
        if shuffle:
            perm = torch.randperm(len(self), generator=generator)
            on = {v.device: perm.to(v.device) for v in data.values()}
            data = {k: v[on[v.device]] for k, v in data.items()}
        for start in range(0, len(self), size):
            yield {k: v[start:start + size] for k, v in data.items()}


def to_tensors(arrays: dict[str, np.ndarray], rows: np.ndarray | None = None) -> TensorSet:
    n = len(next(iter(arrays.values()))) if arrays else 0
    return TensorSet({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
                     np.arange(n) if rows is None else rows)


def split_rows(spec: Spec, labels: dict[str, np.ndarray], seed: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The spec's split (train.val, train.seed unless `seed`), stratified on a binary first task."""
    p = spec.train.params
    first = spec.tasks[0]
    y = labels[label_key(first.name)]
    strata = y if first.kind == "binary" else None
    return split(len(y), p.val, p.seed if seed is None else seed, strata)


@dataclass
class Prepared:
    """The training and validation tensors, and the encoders fitted on the training rows."""

    train: TensorSet
    val: TensorSet
    encoders: Encoders


def prepare(spec: Spec, frame: Frame | None = None, seed: int | None = None) -> Prepared:
    """Load (or take) a frame, check it, split it, fit encoders on train, encode once."""
    frame = load(spec) if frame is None else frame
    check_columns(needed_columns(spec), frame.keys())
    labels = encode_labels(spec, frame)
    n = len(next(iter(labels.values())))
    if n < 2:
        raise DataError(f"the data has {n} row(s); training needs at least two",
                        hint="one row to train on and one to validate")
    train_rows, val_rows = split_rows(spec, labels, seed)
    encoders = Encoders.fit(spec, frame, train_rows)
    data = to_tensors({**encoders.encode(frame), **labels})
    return Prepared(data.take(train_rows), data.take(val_rows), encoders)
