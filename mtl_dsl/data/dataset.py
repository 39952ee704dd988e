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

import zlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..language.diagnostics import DataError, did_you_mean
from ..language.graph import table_of
from ..language.ir import Spec
from .labels import add_derived, raw_columns
from .sources import Frame, file_parts, load_parts, source_columns

Batch = dict[str, torch.Tensor]
ROWS_HINT = "rows are counted from 1, not counting a header line"


def label_key(task: str) -> str:
    return f"label:{task}"


def mask_key(task: str) -> str:
    """Rows a task's metrics are computed on (its `where=` label is 1)."""
    return f"mask:{task}"


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
        for c in raw_columns(spec, t.label.name):
            out.setdefault(c, f"the label of task '{t.name}'")
        for c in raw_columns(spec, t.where.name) if t.where is not None else ():
            out.setdefault(c, f"where= of task '{t.name}'")
    if (label := stratify_label(spec)) is not None:
        for c in raw_columns(spec, label):
            out.setdefault(c, "stratify= of the data source")
    return out


def stratify_label(spec: Spec) -> str | None:
    """The label the data source's `stratify=` names, if any."""
    return getattr(spec.data.params, "stratify", None) if spec.data is not None else None


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


def load_all(spec: Spec) -> dict[str, Frame]:
    """The spec's data, only the columns it needs (checked before reading rows): `{"all":
    frame}` for one source, else the named `train`/`val`/`test` files' frames."""
    if spec.data is None:
        raise DataError("the spec names no data source", hint="add a `data` line or pass --data")
    needed = needed_columns(spec)
    check_columns(needed, source_columns(spec.data, spec.base_dir))
    return load_parts(spec.data, spec.base_dir, list(needed))


def load(spec: Spec) -> Frame:
    """The spec's data as one frame (named files concatenated: train, val, test)."""
    parts = list(load_all(spec).values())
    return parts[0] if len(parts) == 1 else \
        {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


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


def _no_nan(x: np.ndarray, name: str, what: str,
            hint: str = "fill or drop missing values before training") -> None:
    bad = np.isnan(x)
    if bad.any():
        raise DataError(f"column '{name}' ({what}) has {int(bad.sum())} missing value(s), "
                        f"the first at row {_first(bad) + 1}", hint=hint)


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------

def encode_labels(spec: Spec, frame: Frame) -> dict[str, np.ndarray]:
    """`label:TASK` -> checked label array (float32; int64 for multiclass), and `mask:TASK`
    (bool) for tasks whose metrics are restricted by `where=`. Derived labels are computed
    here from their columns."""
    frame = add_derived(spec, frame)
    out = {label_key(t.name): _label(t.kind, t.label.name, frame[t.label.name],
                                     getattr(t.params, "classes", None), t.name)
           for t in spec.tasks}
    for t in spec.tasks:
        if t.where is not None:
            what = f"where= of task '{t.name}'"
            out[mask_key(t.name)] = _label("binary", t.where.name, frame[t.where.name], None,
                                           t.name, what).astype(bool)
    if (name := stratify_label(spec)) is not None:
        frame = with_derived(spec, frame, [name])
        out[STRATA] = _label("binary", name, frame[name], None, "",
                             "stratify= of the data source")
    return out


def with_derived(spec: Spec, frame: Frame, names: list[str]) -> Frame:
    """The frame with the derived labels `names` (and those they read) computed, also when
    no task uses them (e.g. the label a split is stratified on)."""
    from . import labels as lb

    derived = {d.name: d for d in spec.derived_labels}
    out = dict(frame)

    def compute(name: str) -> None:
        d = derived.get(name)
        if d is None or name in out:
            return
        for ref in d.refs:
            compute(ref.name)
        out[name] = lb._truth(lb._eval(d.expr, out, name), name).astype(np.float32)

    for name in names:
        compute(name)
    return out


STRATA = "strata"  # encode_labels' key for the stratify= label (not a model input)


def _label(kind: str, name: str, col: np.ndarray, classes: int | None, task: str,
           what: str | None = None) -> np.ndarray:
    what = what or f"label of {kind} task '{task}'"
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
    """One embedding table's rows: `auto` (id = 1 + frequency rank, 0 = unknown or missing),
    `fixed` (the column holds ids 0..size-1) or `hash` (id = 1 + crc32(value) mod
    (size - 1), 0 = missing)."""

    kind: str  # "auto" | "fixed" | "hash"
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

    @classmethod
    def hashed(cls, buckets: int) -> "Vocab":
        return cls("hash", buckets + 1)

    def encode(self, col: np.ndarray, name: str) -> np.ndarray:
        if self.kind == "fixed":
            return self._fixed(col, name)
        ids = np.zeros(len(col), np.int64)
        present = ~_missing(col)
        if present.any():
            keys, inverse = _factorize(col[present])
            ids[present] = self._ids(keys.tolist())[inverse]
        return ids

    def _ids(self, keys: list[str]) -> np.ndarray:
        """The id of each distinct key."""
        if self.kind == "hash":
            buckets = self.size - 1
            return np.array([1 + zlib.crc32(k.encode()) % buckets for k in keys], np.int64)
        if self._index is None:
            self._index = {k: i + 1 for i, k in enumerate(self.keys)}
        return np.array([self._index.get(k, 0) for k in keys], np.int64)

    def _fixed(self, col: np.ndarray, name: str) -> np.ndarray:
        what = f"ids of a vocab={self.size} feature"
        if col.dtype.kind in "iu":  # the common case, checked without a float copy
            bad = (col < 0) | (col >= self.size)
            if not bad.any():
                return col.astype(np.int64, copy=False)
        x = _numeric(col, name, what)
        bad = np.isnan(x) | (x != np.round(x)) | (x < 0) | (x >= self.size)
        if bad.any():
            i = _first(bad)
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
    def fit(cls, x: np.ndarray, norm: str, missing: str = "error") -> "Scaler":
        """x: (N, size), the training rows (NaN where missing unless missing='error')."""
        d = x.shape[1]
        fill = None
        if missing != "error":
            with np.errstate(all="ignore"):
                mean = np.nanmean(x, axis=0) if len(x) else np.zeros(d)
            fill = [0.0 if missing == "zero" or not np.isfinite(v) else float(v) for v in mean]
            x = np.where(np.isnan(x), np.asarray(fill), x)
        if norm == "none" or len(x) == 0:
            return cls(norm, [0.0] * d, [1.0] * d, missing, fill)
        if norm == "minmax":
            lo, hi = x.min(axis=0), x.max(axis=0)
            shift, scale = lo, hi - lo
        else:
            x = np.log1p(x) if norm == "log" else x
            shift, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # a constant column maps to 0
        return cls(norm, [float(v) for v in shift], [float(v) for v in scale], missing, fill)

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.fill is not None:
            x = np.where(np.isnan(x), np.asarray(self.fill), x)
        x = np.log1p(x) if self.norm == "log" else x
        return ((x - np.asarray(self.shift)) / np.asarray(self.scale)).astype(np.float32)

    def as_dict(self) -> dict:
        return {"norm": self.norm, "shift": self.shift, "scale": self.scale,
                "missing": self.missing, "fill": self.fill}


def sequence_cells(col: np.ndarray, sep: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column (text joined by `sep`, or Parquet lists) as (flat values, length per row);
    a missing or empty cell is an empty list."""
    flat: list = []
    lengths = np.zeros(len(col), np.int64)
    for i, v in enumerate(col):
        if v is None or (isinstance(v, float) and v != v):
            continue
        if isinstance(v, str):
            items = [t.strip() for t in v.split(sep) if t.strip()]
        elif np.ndim(v) == 0:  # a single id read as a number
            items = [v]
        else:
            items = list(v)
        lengths[i] = len(items)
        flat += items
    values = np.array(flat, dtype=object) if flat else np.zeros(0, dtype=object)
    if flat and all(isinstance(v, (int, np.integer)) for v in flat[:100]):
        try:
            values = np.array(flat, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            pass
    return values, lengths


def pad_last(ids: np.ndarray, lengths: np.ndarray, max_len: int, pad: int = -1) -> np.ndarray:
    """(N, max_len) ids: each row's last `max_len` ids, left-aligned, `pad` after them."""
    n = len(lengths)
    out = np.full((n, max_len), pad, np.int64)
    k = np.minimum(lengths, max_len)
    ends = np.cumsum(lengths)
    row = np.repeat(np.arange(n), k)
    pos = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    out[row, pos] = ids[np.repeat(ends - k, k) + pos]
    return out


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
        features, scalers = [], {}
        for f in spec.features:
            cols = list(f.columns)
            if f.kind == "dense":
                p = f.params
                x = _dense(frame, cols, f.name, p.norm, p.missing)[rows]  # rows of the file
                scalers[f.name] = Scaler.fit(x, p.norm, p.missing)
                features.append({"name": f.name, "kind": "dense", "columns": cols})
            else:
                entry = {"name": f.name, "kind": f.kind, "columns": cols,
                         "table": table_of(spec, f)}
                if f.kind == "sequence":
                    entry |= {"sep": f.params.sep, "max_len": f.params.max_len}
                features.append(entry)
        return cls(features, _fit_vocabs(spec, frame, rows, features), scalers)

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
            col = f["columns"][0]
            if f["kind"] == "dense":
                s = self.scalers[f["name"]]
                out[f["name"]] = s.apply(_dense(frame, f["columns"], f["name"], s.norm,
                                                s.missing))
            elif f["kind"] == "sequence":
                values, lengths = sequence_cells(frame[col], f["sep"])
                ids = self.vocabs[f["table"]].encode(values, col)
                out[f["name"]] = pad_last(ids, lengths, f["max_len"])
            else:
                out[f["name"]] = self.vocabs[f["table"]].encode(frame[col], col)
        return out

    def as_dict(self) -> dict:
        return {"features": self.features,
                "vocabs": {k: v.as_dict() for k, v in self.vocabs.items()},
                "scalers": {k: v.as_dict() for k, v in self.scalers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Encoders":
        vocabs = {k: Vocab(v["kind"], v["size"], list(v["keys"])) for k, v in d["vocabs"].items()}
        scalers = {k: Scaler(v["norm"], list(v["shift"]), list(v["scale"]),
                             v.get("missing", "error"),
                             None if v.get("fill") is None else list(v["fill"]))
                   for k, v in d["scalers"].items()}
        return cls(list(d["features"]), vocabs, scalers)


def _fit_vocabs(spec: Spec, frame: Frame, rows: np.ndarray, features: list[dict]
                ) -> dict[str, Vocab]:
    """One vocabulary per table, from the training rows of every feature that reads it."""
    index = {f.name: f for f in spec.features}
    vocabs = {}
    for table in dict.fromkeys(x["table"] for x in features if "table" in x):
        owner = index[table].params
        if owner.hash is not None:
            vocabs[table] = Vocab.hashed(owner.hash)
        elif owner.vocab != "auto":
            vocabs[table] = Vocab("fixed", owner.vocab)
        else:
            columns = []
            for x in (x for x in features if x.get("table") == table):
                col = frame[x["columns"][0]][rows]
                columns.append(sequence_cells(col, x["sep"])[0] if x["kind"] == "sequence"
                               else col)
            vocabs[table] = Vocab.fit(columns, owner.min_count)
    return vocabs


def static_table_sizes(spec: Spec) -> dict[str, int] | None:
    """Rows of every embedding table when no table needs the data (vocab=N or hash=N)."""
    sizes = {}
    for f in spec.features:
        if f.kind == "dense" or f.params.share is not None:
            continue
        if f.params.hash is not None:
            sizes[f.name] = f.params.hash + 1
        elif f.params.vocab != "auto":
            sizes[f.name] = f.params.vocab
        else:
            return None
    return sizes


def _dense(frame: Frame, cols: list[str], feature: str, norm: str, missing: str = "error"
           ) -> np.ndarray:
    """The checked (N, size) float64 matrix of a dense feature; NaN where a value is
    missing, unless missing='error' makes that an error."""
    what = f"dense feature '{feature}'"
    parts = []
    for c in cols:
        x = _numeric(frame[c], c, what)
        if missing == "error":
            _no_nan(x, c, what, "fill or drop them, or declare the feature with "
                                "missing=mean or missing=zero")
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


def _writable(v: np.ndarray) -> np.ndarray:
    """Contiguous and writable: pyarrow's zero-copy columns are read-only, and torch would
    share their memory (the copy costs ~2% of a whole epoch on the benchmark)."""
    v = np.ascontiguousarray(v)
    return v if v.flags.writeable else v.copy()


def to_tensors(arrays: dict[str, np.ndarray], rows: np.ndarray | None = None) -> TensorSet:
    n = len(next(iter(arrays.values()))) if arrays else 0
    return TensorSet({k: torch.from_numpy(_writable(v)) for k, v in arrays.items()},
                     np.arange(n) if rows is None else rows)


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
    fractions = getattr(spec.data.params, "split", None) if spec.data is not None else None
    if fractions is None or len(fractions) == 2:
        val = p.val if fractions is None else fractions[1]
        train_rows, val_rows = split(n, val, seed, strata)
        return {"train": train_rows, "val": val_rows}
    return split3(n, fractions, seed, strata)


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


@dataclass
class Prepared:
    """The training, validation (and test) tensors, and the encoders fitted on training rows."""

    train: TensorSet
    val: TensorSet
    encoders: Encoders
    test: TensorSet | None = None


def prepare(spec: Spec, frame: Frame | None = None, seed: int | None = None) -> Prepared:
    """Load (or take) the data, check it, split it, fit encoders on train, encode once.

    One frame is split (:func:`split_parts`); named train/val/test files are used as they
    are (without a val file, validation rows are split off the training file). Errors name
    the file and its row."""
    if frame is None and _streamed(spec):
        from .streaming import prepare_stream

        return prepare_stream(spec, seed)
    parts = load_all(spec) if frame is None else {"all": frame}
    if "all" in parts:
        return _prepare_one(spec, parts["all"], seed)
    return _prepare_files(spec, parts, seed)


def _streamed(spec: Spec) -> bool:
    return spec.data is not None and bool(getattr(spec.data.params, "stream", False))


def _prepare_one(spec: Spec, frame: Frame, seed: int | None) -> Prepared:
    check_columns(needed_columns(spec), frame.keys())
    labels = encode_labels(spec, frame)
    n = len(next(iter(labels.values())))
    if n < 2:
        raise DataError(f"the data has {n} row(s); training needs at least two",
                        hint="one row to train on and one to validate")
    check_derived(spec, frame)
    rows = split_parts(spec, labels, seed)
    encoders = Encoders.fit(spec, frame, rows["train"])
    labels.pop(STRATA, None)
    data = to_tensors({**encoders.encode(frame), **labels})
    test = data.take(rows["test"]) if "test" in rows else None
    return Prepared(data.take(rows["train"]), data.take(rows["val"]), encoders, test)


def _prepare_files(spec: Spec, parts: dict[str, Frame], seed: int | None) -> Prepared:
    files = file_parts(spec.data)
    labels = {k: _in_file(files[k], lambda f=f: encode_labels(spec, f)) for k, f in parts.items()}
    _in_file(files["train"], lambda: check_derived(spec, parts["train"]))
    train = parts["train"]
    rows = np.arange(len(labels["train"][label_key(spec.tasks[0].name)]))
    val_rows = None
    if "val" not in parts:  # validation rows come from the training file
        rows, val_rows = split_rows(spec, labels["train"], seed)
    encoders = Encoders.fit(spec, train, rows)
    sets = {}
    for k, f in parts.items():
        labels[k].pop(STRATA, None)
        sets[k] = to_tensors({**_in_file(files[k], lambda f=f: encoders.encode(f)), **labels[k]})
    val = sets["val"] if val_rows is None else sets["train"].take(val_rows)
    return Prepared(sets["train"].take(rows), val, encoders, sets.get("test"))


def _in_file(name: str, run):
    """Run `run()`; a DataError's message is prefixed with the file it is about."""
    try:
        return run()
    except DataError as err:
        d = err.diagnostics[0]
        raise DataError(f"{name}: {d.message}", d.hint, d.code) from None


def check_derived(spec: Spec, frame: Frame) -> None:
    """A derived label a task learns from must match some rows (a typo in a compared value
    would otherwise train on all zeros)."""
    used = {t.label.name for t in spec.tasks} | {stratify_label(spec)}
    derived = with_derived(spec, add_derived(spec, frame), [n for n in used if n])
    for d in spec.derived_labels:
        if d.name in used and not derived[d.name].any():
            shown = []
            for ref in d.refs:
                if ref.name in frame:
                    values = _sample_values(frame[ref.name])
                    shown.append(f"column '{ref.name}' holds {values}")
            raise DataError(f"label '{d.name}' matches no rows of the data"
                            + (f"; {'; '.join(shown)}" if shown else ""),
                            hint=f"check the values compared in `label {d.name} = ...` "
                                 "(text is compared with surrounding spaces trimmed)")


def _sample_values(col: np.ndarray, k: int = 5) -> str:
    keys, inverse = _factorize(col[~_missing(col)])
    counts = np.bincount(inverse, minlength=len(keys))
    top = [keys[i] for i in np.argsort(-counts, kind="stable")[:k]]
    more = ", ..." if len(keys) > k else ""
    return ", ".join(repr(str(v).strip()) for v in top) + more
