"""Encoded rows as contiguous tensors, and the batches training reads from them.

Batch keys: each feature name (dense: float32 ``(B, size)``, sparse: int64 ``(B,)`` ids,
0 = out of vocabulary or missing; sequence: int64 ``(B, max_len)``, -1 = padding),
``label:TASK`` (float32 ``(B,)``, int64 for multiclass) and ``mask:TASK`` (bool, the rows a
task's metrics count). A batch is a slice of one shuffled copy of the tensors: no
per-sample Dataset, no collate (docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .encoders import Encoders

Batch = dict[str, torch.Tensor]


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


def writable(v: np.ndarray) -> np.ndarray:
    """Contiguous and writable: pyarrow's zero-copy columns are read-only, and torch would
    share their memory (the copy costs ~2% of a whole epoch on the benchmark)."""
    v = np.ascontiguousarray(v)
    return v if v.flags.writeable else v.copy()


def as_tensors(arrays: dict[str, np.ndarray]) -> Batch:
    """Arrays as tensors (copied only where they are read-only or strided)."""
    return {k: torch.from_numpy(writable(v)) for k, v in arrays.items()}


def to_tensors(arrays: dict[str, np.ndarray], rows: np.ndarray | None = None) -> TensorSet:
    """Encoded arrays of equal length as a TensorSet (`rows` default to 0..N-1)."""
    n = len(next(iter(arrays.values()))) if arrays else 0
    return TensorSet(as_tensors(arrays), np.arange(n) if rows is None else rows)


@dataclass
class Prepared:
    """The training, validation (and test) rows, and the encoders fitted on training rows.
    `train` is a :class:`TensorSet`, or a streamed set with the same `batches()`."""

    train: TensorSet
    val: TensorSet
    encoders: Encoders
    test: TensorSet | None = None
