"""The encoding plan: what each feature reads and how, fixed by the spec alone.

A codec is a frozen, typed description of one feature (its columns, the embedding table
it looks up, its options); a table plan says how a table's rows are found (`hash=N`,
`vocab=N`, or ranked from the data). Fitting (:mod:`mtl_dsl.data.statistics`) and encoding
(:mod:`mtl_dsl.data.encoders`) both read the plan, so data held in memory and data
streamed in chunks are encoded by one description (docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from ..language import registry as reg
from ..language.graph import table_of
from ..language.ir import Feature, Spec
from .values import Frame, dense_matrix, sequence_cells

TableKind = Literal["auto", "fixed", "hash"]


@dataclass(frozen=True)
class SparseCodec:
    """One categorical column looked up in `table`."""

    name: str
    column: str
    table: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def cells(self, frame: Frame) -> np.ndarray:
        """The values this feature feeds to its table's vocabulary."""
        return frame[self.column]

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": "sparse", "columns": [self.column],
                "table": self.table}


@dataclass(frozen=True)
class SequenceCodec:
    """A list column (`sep`-joined text or Parquet lists), the last `max_len` ids kept."""

    name: str
    column: str
    table: str
    sep: str
    max_len: int

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def cells(self, frame: Frame) -> np.ndarray:
        """Every list item of every row, flat (the values the vocabulary counts)."""
        return sequence_cells(frame[self.column], self.sep)[0]

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": "sequence", "columns": [self.column],
                "table": self.table, "sep": self.sep, "max_len": self.max_len}


@dataclass(frozen=True)
class DenseCodec:
    """Numeric columns normalised by `norm`; missing values per `missing`."""

    name: str
    columns: tuple[str, ...]
    norm: str
    missing: str

    def matrix(self, frame: Frame) -> np.ndarray:
        """The checked (N, size) float64 values; NaN where missing (unless an error)."""
        return dense_matrix(frame, self.columns, self.name, self.norm, self.missing)

    def as_dict(self) -> dict:
        """`norm` and `missing` are stored with the fitted scaler, as they always were."""
        return {"name": self.name, "kind": "dense", "columns": list(self.columns)}


Codec = Union[SparseCodec, SequenceCodec, DenseCodec]
TableCodec = Union[SparseCodec, SequenceCodec]


@dataclass(frozen=True)
class TablePlan:
    """How one embedding table's rows are found: `rows` from the spec
    (:meth:`SparseParams.table_rows`), or None when a vocabulary is ranked from the data."""

    name: str
    kind: TableKind
    rows: int | None
    min_count: int
    max_ids: int | None = None  # keep only the most frequent values (docs/data.md)

    @property
    def counted(self) -> bool:
        """Whether fitting counts the values: to rank them (auto), to cut the rare ones or
        to measure a hashed table's collisions."""
        return self.kind in ("auto", "hash")


@dataclass(frozen=True)
class Plan:
    """Every feature's codec, in spec order, and every table they look up."""

    codecs: tuple[Codec, ...]
    tables: tuple[TablePlan, ...]

    @classmethod
    def from_spec(cls, spec: Spec) -> "Plan":
        codecs = tuple(codec_of(spec, f) for f in spec.features)
        index = {f.name: f for f in spec.features}
        owners = dict.fromkeys(c.table for c in codecs if not isinstance(c, DenseCodec))
        return cls(codecs, tuple(_table_plan(t, index[t].params) for t in owners))

    @property
    def columns(self) -> list[str]:
        return [c for codec in self.codecs for c in codec.columns]

    def readers(self, table: str) -> list[TableCodec]:
        """The features that look up `table` (their values make one vocabulary)."""
        return [c for c in self.codecs if not isinstance(c, DenseCodec) and c.table == table]


def codec_of(spec: Spec, feature: Feature) -> Codec:
    """The codec of one declared feature."""
    p = feature.params
    if isinstance(p, reg.DenseParams):
        return DenseCodec(feature.name, feature.columns, p.norm, p.missing)
    column, table = feature.columns[0], table_of(spec, feature)
    if isinstance(p, reg.SequenceParams):
        return SequenceCodec(feature.name, column, table, p.sep, p.max_len)
    return SparseCodec(feature.name, column, table)


def _table_plan(name: str, owner: reg.SparseParams) -> TablePlan:
    rows = owner.table_rows()
    kind: TableKind = "hash" if owner.hash is not None else "auto" if rows is None else "fixed"
    return TablePlan(name, kind, rows, owner.min_count, owner.max_ids)


def codec_from_dict(d: dict, scalers: dict[str, dict]) -> Codec:
    """A codec as a checkpoint stores it (:meth:`Encoders.as_dict`); a dense codec's `norm`
    and `missing` are read from its stored scaler."""
    if d["kind"] == "dense":
        s = scalers[d["name"]]
        return DenseCodec(d["name"], tuple(d["columns"]), s["norm"], s.get("missing", "error"))
    column = d["columns"][0]
    if d["kind"] == "sequence":
        return SequenceCodec(d["name"], column, d["table"], d["sep"], d["max_len"])
    return SparseCodec(d["name"], column, d["table"])


def static_table_sizes(spec: Spec) -> dict[str, int] | None:
    """Rows of every embedding table when no table needs the data (vocab=N or hash=N)."""
    sizes = {t.name: t.rows for t in Plan.from_spec(spec).tables}
    if any(rows is None for rows in sizes.values()):
        return None
    return {name: rows for name, rows in sizes.items() if rows is not None}
