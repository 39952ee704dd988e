"""Larger than memory: a Parquet source streamed in record batches through a shuffle buffer.

`data parquet("folder/", stream=true, buffer=65536)` trains without loading the
training rows: one pass over the file fits the encoders (vocabulary counts,
normalisation moments, fill values: the same statistics :class:`Encoders.fit`
computes, summed batch by batch), and every epoch reads the record batches
again (files in a seeded random order), encodes them and passes them through a
shuffle buffer of `buffer` rows, so memory is bounded by the buffer, one read
batch and one training batch, whatever the size of the data.

One path is split per row by a seeded hash of the row's position in the data
(not stratified: that would need a pass to count the strata first); named files
(`train=` streamed, `val=`/`test=` read whole) are used as they are. The
validation and test rows are kept in memory, encoded, as :class:`TensorSet`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import dataset as ds
from ..language.diagnostics import DataError
from ..language.ir import Spec
from .sources import Frame, file_parts, resolve_path, table_frame

READ_ROWS = 16384  # rows per record batch read from the files


def _fragments(path: Path) -> list:
    import pyarrow.dataset as pads

    if not path.exists():
        raise DataError(f"data file not found: {path}",
                        hint="paths in a spec are relative to the spec file")
    return list(pads.dataset(path, format="parquet").get_fragments())


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
    """Part of each row: 0 train, 1 validation, 2 test."""
    u = _uniform(seed, rows)
    return np.where(u < val, 1, np.where(u < val + test, 2, 0))


@dataclass
class _Moments:
    """Running sums of a dense feature's columns (exactly what Scaler.fit needs)."""

    n: int = 0
    total: np.ndarray | None = None  # per column: sums over present values
    squares: np.ndarray | None = None
    logs: np.ndarray | None = None
    log_squares: np.ndarray | None = None
    present: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:  # x: (B, d), NaN where missing
        ok = ~np.isnan(x)
        z = np.where(ok, x, 0.0)
        lz = np.where(ok, np.log1p(np.where(ok & (x > -1), x, 0.0)), 0.0)
        parts = {"total": z.sum(0), "squares": (z * z).sum(0), "logs": lz.sum(0),
                 "log_squares": (lz * lz).sum(0), "present": ok.sum(0)}
        for k, v in parts.items():
            setattr(self, k, v if getattr(self, k) is None else getattr(self, k) + v)
        low = np.where(ok, x, np.inf).min(0) if len(x) else np.full(x.shape[1], np.inf)
        high = np.where(ok, x, -np.inf).max(0) if len(x) else np.full(x.shape[1], -np.inf)
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)
        self.n += len(x)

    def scaler(self, norm: str, missing: str, d: int) -> ds.Scaler:
        if self.n == 0:
            return ds.Scaler(norm, [0.0] * d, [1.0] * d, missing, None)
        absent = self.n - self.present
        fill = None
        if missing != "error":
            with np.errstate(all="ignore"):
                mean = self.total / self.present
            fill = np.where((missing == "zero") | ~np.isfinite(mean), 0.0, mean)
        f = np.zeros(d) if fill is None else fill
        if norm == "none":
            shift, scale = np.zeros(d), np.ones(d)
        elif norm == "minmax":
            lo = np.where(absent > 0, np.minimum(self.low, f), self.low)
            hi = np.where(absent > 0, np.maximum(self.high, f), self.high)
            shift, scale = lo, hi - lo
        else:
            s, ss = (self.logs, self.log_squares) if norm == "log" else (self.total, self.squares)
            g = np.log1p(f) if norm == "log" else f
            s, ss = s + absent * g, ss + absent * g * g
            shift = s / self.n
            scale = np.sqrt(np.maximum(ss / self.n - shift * shift, 0.0))
        scale = np.where(scale > 1e-12, scale, 1.0)
        return ds.Scaler(norm, [float(v) for v in shift], [float(v) for v in scale], missing,
                         None if fill is None else [float(v) for v in fill])


@dataclass
class _Fit:
    """Statistics of the training rows, accumulated batch by batch."""

    spec: Spec
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> key -> count
    moments: dict[str, _Moments] = field(default_factory=dict)

    def add(self, frame: Frame) -> None:
        for f in self.spec.features:
            col = frame[f.columns[0]]
            if f.kind == "dense":
                x = ds._dense(frame, list(f.columns), f.name, f.params.norm, f.params.missing)
                self.moments.setdefault(f.name, _Moments()).add(x)
                continue
            table = ds.table_of(self.spec, f)
            if f.kind == "sequence":
                col = ds.sequence_cells(col, f.params.sep)[0]
            keys, inverse = ds._factorize(col[~ds._missing(col)])
            counts = self.counts.setdefault(table, {})
            for k, n in zip(keys.tolist(), np.bincount(inverse, minlength=len(keys)).tolist()):
                counts[k] = counts.get(k, 0) + n

    def encoders(self) -> ds.Encoders:
        empty = {c: np.zeros(0) for f in self.spec.features for c in f.columns}
        enc = ds.Encoders.fit(self.spec, empty, np.zeros(0, np.int64))  # layout and fixed tables
        index = {f.name: f for f in self.spec.features}
        for table, vocab in enc.vocabs.items():
            if vocab.kind == "auto":
                ranked = sorted(self.counts.get(table, {}).items(), key=lambda kv: (-kv[1], kv[0]))
                kept = [k for k, n in ranked if n >= index[table].params.min_count]
                enc.vocabs[table] = ds.Vocab("auto", len(kept) + 1, kept)
        for name in enc.scalers:
            p = index[name].params
            enc.scalers[name] = self.moments.get(name, _Moments()).scaler(
                p.norm, p.missing, len(index[name].columns))
        return enc


class StreamSet:
    """The training rows of a Parquet source, read anew every epoch (see the module doc).

    `batches()` yields the same batches a TensorSet would (same keys, shapes, dtypes);
    `peak_rows` is the most rows the shuffle buffer held at once."""

    def __init__(self, spec: Spec, path: Path, columns: list[str], encoders: ds.Encoders,
                 rows: int, keep: tuple[float, float] | None, seed: int, buffer: int,
                 read_rows: int = READ_ROWS):
        self.spec, self.path, self.columns, self.encoders = spec, path, columns, encoders
        self.n, self.keep, self.seed = rows, keep, seed
        self.buffer, self.read_rows = buffer, read_rows
        self.device = torch.device("cpu")
        self.peak_rows = 0
        self.rows = np.arange(rows)  # positions in the training stream, for len() and logs

    def __len__(self) -> int:
        return self.n

    def to(self, device) -> "StreamSet":
        self.device = torch.device(device)
        return self

    def chunks(self, order: list[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Encoded training rows, one record batch at a time, files in `order`."""
        fragments = _fragments(self.path)
        starts = np.cumsum([0] + [f.count_rows() for f in fragments])
        for i in order if order is not None else range(len(fragments)):
            start = int(starts[i])
            for rb in fragments[i].to_batches(columns=self.columns, batch_size=self.read_rows):
                frame = table_frame(rb, self.columns)
                pos = start + np.arange(rb.num_rows)
                start += rb.num_rows
                labels = ds.encode_labels(self.spec, frame)
                labels.pop(ds.STRATA, None)
                arrays = self.encoders.encode(frame) | labels
                if self.keep is not None:
                    mine = assign(self.seed, pos, *self.keep) == 0
                    arrays = {k: v[mine] for k, v in arrays.items()}
                yield arrays

    def batches(self, size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[ds.Batch]:
        order = None
        if shuffle:
            n_files = len(_fragments(self.path))
            order = torch.randperm(n_files, generator=generator).tolist()
        held: dict[str, torch.Tensor] | None = None
        for arrays in self.chunks(order):
            chunk = {k: torch.from_numpy(ds._writable(v)) for k, v in arrays.items()}
            held = chunk if held is None else {k: torch.cat([held[k], chunk[k]]) for k in held}
            n = len(next(iter(held.values())))
            self.peak_rows = max(self.peak_rows, n)
            if not shuffle or n >= self.buffer + size:
                out = (n - (self.buffer if shuffle else 0)) // size * size
                perm = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
                yield from self._emit({k: v[perm[:out]] for k, v in held.items()}, size)
                held = {k: v[perm[out:]] for k, v in held.items()}
        if held is not None and len(next(iter(held.values()))):
            n = len(next(iter(held.values())))
            perm = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            yield from self._emit({k: v[perm] for k, v in held.items()}, size)

    def _emit(self, data: dict[str, torch.Tensor], size: int) -> Iterator[ds.Batch]:
        n = len(next(iter(data.values())))
        for start in range(0, n, size):
            yield {k: v[start:start + size].to(self.device) for k, v in data.items()}


def prepare_stream(spec: Spec, seed: int | None = None) -> ds.Prepared:
    """Fit the encoders in one pass over the training rows; validation/test in memory."""
    p, setting = spec.train.params, spec.data
    seed = p.seed if seed is None else seed
    files = {k: resolve_path(v, spec.base_dir) for k, v in file_parts(setting).items()}
    needed = ds.needed_columns(spec)
    train_path = files.get("all", files.get("train"))
    columns = list(needed)
    ds.check_columns(needed, _schema(train_path))
    keep = _fractions(spec) if "all" in files or "val" not in files else None
    fit, held, n_train = _Fit(spec), {1: [], 2: []}, 0
    fragments = _fragments(train_path)
    start = 0
    for fragment in fragments:
        for rb in fragment.to_batches(columns=columns, batch_size=READ_ROWS):
            frame = table_frame(rb, columns)
            pos = start + np.arange(rb.num_rows)
            start += rb.num_rows
            ds.encode_labels(spec, frame)  # checks labels (0/1, numbers) batch by batch
            part = assign(seed, pos, *keep) if keep is not None else np.zeros(len(pos), int)
            for k in (1, 2):
                if (part == k).any():
                    held[k].append({c: v[part == k] for c, v in frame.items()})
            train_frame = {c: v[part == 0] for c, v in frame.items()}
            fit.add(train_frame)
            n_train += int((part == 0).sum())
    if n_train == 0:
        raise DataError(f"{train_path} has no training rows")
    encoders = fit.encoders()
    train = StreamSet(spec, train_path, columns, encoders, n_train, keep, seed,
                      setting.params.buffer)
    sets = {}
    for k, name in ((1, "val"), (2, "test")):
        if name in files and "all" not in files:
            frame = ds.load_parts(spec.data.model_copy(update={"params": setting.params.model_copy(
                update={"path": str(files[name]), "train": None, "val": None, "test": None})}),
                spec.base_dir, columns)["all"]
        elif held[k]:
            frame = {c: np.concatenate([h[c] for h in held[k]]) for c in columns}
        else:
            continue
        labels = ds.encode_labels(spec, frame)
        labels.pop(ds.STRATA, None)
        sets[name] = ds.to_tensors(encoders.encode(frame) | labels)
    if "val" not in sets:
        raise DataError("streaming found no validation rows", hint="raise the val fraction")
    return ds.Prepared(train, sets["val"], encoders, sets.get("test"))


def _schema(path: Path) -> list[str]:
    import pyarrow.dataset as pads

    if not path.exists():
        raise DataError(f"data file not found: {path}")
    return list(pads.dataset(path, format="parquet").schema.names)


def _fractions(spec: Spec) -> tuple[float, float]:
    """(validation, test) fractions of a split streamed source."""
    split = getattr(spec.data.params, "split", None)
    if split is None:
        return spec.train.params.val, 0.0
    return split[1], split[2] if len(split) > 2 else 0.0
