"""Larger than memory: a Parquet source streamed in record batches through a shuffle buffer.

`data parquet("folder/", stream=true, buffer=65536)` trains without loading the
training rows: one pass over the file feeds each record batch's training rows to the
same accumulators an in-memory fit feeds its one chunk (:class:`Statistics`), so the
encoders are those of the whole training data; every epoch reads the record batches
again (files in a seeded random order), encodes them and passes them through a shuffle
buffer of `buffer` rows, so memory is bounded by the buffer, one read batch and one
training batch, whatever the size of the data.

One path is split per row by a seeded hash of the row's position in the data
(:func:`~mtl_dsl.data.splits.assign`; not stratified: that would need a pass to count
the strata first); named files (`train=` streamed, `val=`/`test=` read whole) are used
as they are. The validation and test rows are kept in memory, encoded, as TensorSets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..language.diagnostics import DataError
from ..language.ir import Spec
from .encoders import Encoders
from .frames import needed_columns
from .labels import STRATA, encode_labels
from .plan import Plan
from .sources import file_parts, read_file, resolve_path, table_frame
from .splits import assign, stream_fractions
from .statistics import Statistics
from .tensors import Batch, Prepared, as_tensors, to_tensors
from .values import Frame, at_rows, check_columns

READ_ROWS = 16384  # rows per record batch read from the files


def _dataset(path: Path):
    import pyarrow.dataset as pads

    if not path.exists():
        raise DataError(f"data file not found: {path}",
                        hint="paths in a spec are relative to the spec file")
    return pads.dataset(path, format="parquet")


def _fragments(path: Path) -> list:
    return list(_dataset(path).get_fragments())


def _record_batches(path: Path, columns: list[str], read_rows: int,
                    order: list[int] | None = None) -> Iterator[tuple[np.ndarray, Frame]]:
    """(row positions in the data, frame) per record batch, files in `order` (else in
    file order); a row's position does not depend on the order files are read in."""
    fragments = _fragments(path)
    starts = np.cumsum([0] + [f.count_rows() for f in fragments])
    for i in order if order is not None else range(len(fragments)):
        start = int(starts[i])
        for rb in fragments[i].to_batches(columns=columns, batch_size=read_rows):
            yield start + np.arange(rb.num_rows), table_frame(rb, columns)
            start += rb.num_rows


def _labelled(spec: Spec, arrays: dict[str, np.ndarray], frame: Frame
              ) -> dict[str, np.ndarray]:
    """Encoded features with the frame's checked labels (no strata: not a model input)."""
    labels = encode_labels(spec, frame)
    labels.pop(STRATA, None)
    return arrays | labels


class StreamSet:
    """The training rows of a Parquet source, read anew every epoch (see the module doc).

    `batches()` yields the same batches a TensorSet would (same keys, shapes, dtypes);
    `peak_rows` is the most rows the shuffle buffer held at once."""

    def __init__(self, spec: Spec, path: Path, columns: list[str], encoders: Encoders,
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
        for pos, frame in _record_batches(self.path, self.columns, self.read_rows, order):
            arrays = _labelled(self.spec, self.encoders.encode(frame), frame)
            if self.keep is not None:
                mine = assign(self.seed, pos, *self.keep) == 0
                arrays = {k: v[mine] for k, v in arrays.items()}
            yield arrays

    def batches(self, size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[Batch]:
        order = None
        if shuffle:
            n_files = len(_fragments(self.path))
            order = torch.randperm(n_files, generator=generator).tolist()
        held: Batch | None = None
        for arrays in self.chunks(order):
            chunk = as_tensors(arrays)
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

    def _emit(self, data: Batch, size: int) -> Iterator[Batch]:
        """Batches on the training device; to a GPU through pinned memory, so the copy
        does not wait for the host (untested here: no GPU)."""
        n = len(next(iter(data.values())))
        pin = self.device.type == "cuda"
        for start in range(0, n, size):
            yield {k: (v[start:start + size].pin_memory() if pin else v[start:start + size])
                   .to(self.device, non_blocking=pin) for k, v in data.items()}


def prepare_stream(spec: Spec, seed: int | None = None) -> Prepared:
    """Fit the encoders in one pass over the training rows; validation/test in memory."""
    setting = spec.data
    seed = spec.train.params.seed if seed is None else seed
    files = {k: resolve_path(v, spec.base_dir) for k, v in file_parts(setting).items()}
    needed = needed_columns(spec)
    columns = list(needed)
    train_path = files.get("all", files.get("train"))
    check_columns(needed, _dataset(train_path).schema.names)
    keep = stream_fractions(spec) if "all" in files or "val" not in files else None
    stats, held, n_train = _fit_pass(spec, train_path, columns, keep, seed)
    if n_train == 0:
        raise DataError(f"{train_path} has no training rows")
    encoders = Encoders.from_statistics(stats)
    train = StreamSet(spec, train_path, columns, encoders, n_train, keep, seed,
                      setting.params.buffer)
    sets = {}
    for k, name in ((1, "val"), (2, "test")):
        if name in files and "all" not in files:
            text = file_parts(setting)[name]
            frame = table_frame(read_file(setting, spec.base_dir, text, columns), columns)
        elif held[k]:
            frame = {c: np.concatenate([h[c] for h in held[k]]) for c in columns}
        else:
            continue
        try:
            sets[name] = to_tensors(_labelled(spec, encoders.encode(frame), frame))
        except DataError as err:
            raise at_rows(err, file_parts(setting).get(name, str(train_path)), 0) from None
    if "val" not in sets:
        raise DataError("streaming found no validation rows", hint="raise the val fraction")
    return Prepared(train, sets["val"], encoders, sets.get("test"))


def _fit_pass(spec: Spec, path: Path, columns: list[str], keep: tuple[float, float] | None,
              seed: int) -> tuple[Statistics, dict[int, list[Frame]], int]:
    """One read of the training file: labels checked, the training rows fed to the
    statistics, held-out rows (1 validation, 2 test) kept; and the training row count."""
    stats = Statistics(Plan.from_spec(spec))
    held: dict[int, list[Frame]] = {1: [], 2: []}
    n_train = 0
    for pos, frame in _record_batches(path, columns, READ_ROWS):
        try:  # labels (0/1, numbers) and dense values are checked batch by batch
            encode_labels(spec, frame)
            part = assign(seed, pos, *keep) if keep is not None else np.zeros(len(pos), int)
            train_rows = np.flatnonzero(part == 0)
            stats.add(frame, train_rows)
        except DataError as err:  # rows counted from the start of the data
            raise at_rows(err, str(path), int(pos[0]) if len(pos) else 0) from None
        for k in (1, 2):
            if (part == k).any():
                held[k].append({c: v[part == k] for c, v in frame.items()})
        n_train += len(train_rows)
    return stats, held, n_train
