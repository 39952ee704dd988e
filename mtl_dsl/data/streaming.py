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

Across N processes each rank reads only its partition (`StreamSet.rank_batches`): the
files' row groups (or slices of them) dealt to ranks by training rows, each rank with its
own shuffle buffer and B/N rows a step, every rank taking the same number of steps
(empty batches once its rows run out); docs/scaling.md says why and what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..language.diagnostics import DataError
from ..language.ir import Spec
from .encoders import Encoders
from .frames import needed_columns
from .labels import STRATA, encode_labels
from .codecs import Plan
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


@dataclass(frozen=True)
class Unit:
    """What one rank reads of a partitioned stream: rows [lo, hi) of one row group of one
    file, the group's first row at position `start` of the data; `rows` of them train."""

    fragment: int
    group: int
    start: int
    lo: int
    hi: int
    rows: int


def rank_size(size: int, rank: int, world: int) -> int:
    """Rank `rank`'s share of a global batch of `size` rows (the shares add up to it)."""
    if size < world:
        raise DataError(f"a streamed batch (batch={size}) cannot be split over {world} "
                        "processes", code="E706",
                        hint=f"use batch= of at least {world}, or fewer processes")
    return (rank + 1) * size // world - rank * size // world


def _units(path: Path, world: int, keep: tuple[float, float] | None, seed: int
           ) -> list[Unit]:
    """The row groups of the files, each cut in `world` slices when there are fewer than
    2 x `world` groups (so that every rank gets a share even of one file), with their
    training rows counted by the same per-row hash the split uses."""
    groups, start = [], 0
    for i, fragment in enumerate(_fragments(path)):
        fragment.ensure_complete_metadata()
        for group in fragment.row_groups:
            groups.append((i, group.id, start, group.num_rows))
            start += group.num_rows
    cuts = 1 if len(groups) >= 2 * world else world
    units = []
    for i, g, first, n in groups:
        for c in range(cuts):
            lo, hi = c * n // cuts, (c + 1) * n // cuts
            pos = first + np.arange(lo, hi)
            rows = int((assign(seed, pos, *keep) == 0).sum()) if keep is not None else hi - lo
            units.append(Unit(i, g, first, lo, hi, rows))
    return units


def _unit_batches(path: Path, columns: list[str], read_rows: int, unit: Unit
                  ) -> Iterator[tuple[np.ndarray, Frame]]:
    """(row positions, frame) of one unit's rows, a record batch at a time."""
    group = _fragments(path)[unit.fragment].subset(row_group_ids=[unit.group])
    at = 0
    for rb in group.to_batches(columns=columns, batch_size=read_rows):
        lo, hi = max(unit.lo - at, 0), min(unit.hi - at, rb.num_rows)
        if lo < hi:
            yield unit.start + at + np.arange(lo, hi), table_frame(rb.slice(lo, hi - lo), columns)
        at += rb.num_rows


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
        self._partitions: dict[int, list[list[Unit]]] = {}  # by process count

    def __len__(self) -> int:
        return self.n

    def to(self, device) -> "StreamSet":
        self.device = torch.device(device)
        return self

    def chunks(self, order: list[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Encoded training rows, one record batch at a time, files in `order`."""
        for pos, frame in _record_batches(self.path, self.columns, self.read_rows, order):
            yield self._encoded(pos, frame)

    def _encoded(self, pos: np.ndarray, frame: Frame) -> dict[str, np.ndarray]:
        """The training rows of one read batch, encoded, with their labels."""
        arrays = _labelled(self.spec, self.encoders.encode(frame), frame)
        if self.keep is not None:
            mine = assign(self.seed, pos, *self.keep) == 0
            arrays = {k: v[mine] for k, v in arrays.items()}
        return arrays

    def batches(self, size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[Batch]:
        order = None
        if shuffle:
            n_files = len(_fragments(self.path))
            order = torch.randperm(n_files, generator=generator).tolist()
        yield from self._buffered(self.chunks(order), size, generator, shuffle)

    def _buffered(self, chunks: Iterator[dict[str, np.ndarray]], size: int,
                  generator: torch.Generator | None, shuffle: bool) -> Iterator[Batch]:
        """Batches of `size` rows drawn from a buffer of `buffer` rows (in order unshuffled)."""
        held: Batch | None = None
        for arrays in chunks:
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

    # ---- partitioned by rank (docs/scaling.md "Streamed Parquet") ----------------------

    def partition(self, world: int) -> list[list[Unit]]:
        """Each rank's units (row groups, or slices of them), fixed for the run: balanced
        by training rows (largest first, to the rank with the fewest so far), the same on
        every rank without a message; every unit belongs to exactly one rank."""
        if world not in self._partitions:
            units = _units(self.path, world, self.keep, self.seed)
            parts: list[list[Unit]] = [[] for _ in range(world)]
            rows = [0] * world
            for unit in sorted(units, key=lambda u: -u.rows):
                r = rows.index(min(rows))
                parts[r].append(unit)
                rows[r] += unit.rows
            self._partitions[world] = parts
        return self._partitions[world]

    def steps(self, size: int, world: int) -> int:
        """Steps of an epoch that every rank takes: the most any rank needs for its rows
        with its share of the global batch (ranks that run out take empty shards)."""
        return max(-(-sum(u.rows for u in part) // rank_size(size, r, world))
                   for r, part in enumerate(self.partition(world)))

    def rank_batches(self, size: int, generator: torch.Generator, rank: int, world: int
                     ) -> Iterator[Batch]:
        """This rank's batches of an epoch: its own units in a seeded order through its own
        shuffle buffer, `size`/N rows each, then empty batches up to the agreed steps.
        One number is drawn from the shared `generator` (the same on every rank, so a
        resumed run's generator state is every rank's); the rank's own order derives
        from it."""
        mine = torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,), generator=generator)) + rank)
        units = self.partition(world)[rank]
        order = [units[i] for i in torch.randperm(len(units), generator=mine).tolist()]
        taken = 0
        for batch in self._buffered(self._unit_chunks(order), rank_size(size, rank, world),
                                    mine, True):
            taken += 1
            yield batch
        empty = None
        for _ in range(self.steps(size, world) - taken):
            empty = empty if empty is not None else self._empty()
            yield empty

    def _unit_chunks(self, units: list["Unit"]) -> Iterator[dict[str, np.ndarray]]:
        for unit in units:
            for pos, frame in _unit_batches(self.path, self.columns, self.read_rows, unit):
                yield self._encoded(pos, frame)

    def first_rows(self) -> Batch:
        """The first training rows of the data (a padding row for a rank with none)."""
        for arrays in self.chunks():
            if len(next(iter(arrays.values()))):
                return next(self._emit(as_tensors(arrays), len(next(iter(arrays.values())))))
        raise DataError(f"{self.path} has no training rows")

    def _empty(self) -> Batch:
        """A batch of no rows with every key, dtype and width a real batch has."""
        frame = table_frame(_dataset(self.path).schema.empty_table(), self.columns)
        pos = np.zeros(0, np.int64)
        return next(self._emit(as_tensors(self._encoded(pos, frame)), 1, keep_empty=True))

    def _emit(self, data: Batch, size: int, keep_empty: bool = False) -> Iterator[Batch]:
        """Batches on the training device; to a GPU through pinned memory, so the copy
        does not wait for the host (untested here: no GPU)."""
        n = len(next(iter(data.values())))
        pin = self.device.type == "cuda"
        for start in range(0, max(n, int(keep_empty)), size):
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
