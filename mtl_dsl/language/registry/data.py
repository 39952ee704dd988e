"""Parameter models of the data sources: the built-in generators (with what each column
holds), CSV and Parquet files, and the side tables joined to them (docs/data.md)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..syntax import Call, plain
from .bounds import (MAX_CLASSES, MAX_COLUMNS, MAX_EXPERTS, MAX_ROWS, MAX_SEQUENCE,
                     MAX_VALUES, NonNegativeReal, Params, PositiveReal, Seed)

@dataclass(frozen=True)
class Values:
    """What a generated column holds: `real` (finite floats of either sign), `binary` (0/1),
    `ids` (integers >= 0), `classes` (integers 0..classes-1) or `text`. `mtl check` compares
    it with what reads the column instead of drawing the data (mtl_dsl/data/sample.py)."""

    kind: Literal["real", "binary", "ids", "classes", "text"]
    classes: int = 0


REAL, BINARY, IDS, TEXT = Values("real"), Values("binary"), Values("ids"), Values("text")


class SyntheticSource(Params):
    """A built-in generator (mtl_dsl/data/synthetic.py): data from its parameters alone."""

    @abstractmethod
    def columns(self) -> dict[str, Values]:
        """The generator's columns in order, each with what it holds: the one declaration
        of its output, which tests/test_synthetic_columns.py holds the generator to."""


class SyntheticCorrelated(SyntheticSource):
    """The MMoE paper's generator (docs/architectures.md)."""

    rows: Annotated[int, Field(ge=10, le=MAX_ROWS)] = 20000
    correlation: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.8
    seed: Seed = 0
    dim: Annotated[int, Field(ge=1, le=MAX_COLUMNS)] = 100
    c: PositiveReal = 1.0
    m: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 10
    noise: NonNegativeReal = 0.01
    target: Literal["regression", "binary", "multiclass"] = "regression"
    classes: Annotated[int, Field(ge=2, le=MAX_CLASSES)] = 4

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticCorrelated":
        if self.rows * self.dim > MAX_VALUES:
            raise ValueError(f"rows x dim = {self.rows * self.dim:,} values; at most "
                             f"{MAX_VALUES:,} are generated")
        return self

    def columns(self) -> dict[str, Values]:
        y = {"regression": REAL, "binary": BINARY,
             "multiclass": Values("classes", self.classes)}[self.target]
        return {**{f"x_{i}": REAL for i in range(self.dim)}, "y1": y, "y2": y}


FUNNEL_LABELS = ("click", "daction", "oaction", "purchase", "activation")


class SyntheticFunnel(SyntheticSource):
    """Impression -> click -> D-action (cart/wish) or O-action -> purchase -> activation,
    each step a logistic function of user/item factors and dense features."""

    rows: Annotated[int, Field(ge=10, le=MAX_ROWS)] = 50000
    seed: Seed = 0
    users: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 2000
    items: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 1000
    categories: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 50
    dense: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 4
    factors: Annotated[int, Field(ge=1, le=MAX_EXPERTS)] = 4
    ctr: Annotated[float, Field(gt=0, lt=1)] = 0.1
    # DUPN: `history=L` adds a column `history`, 1..L items per row ("3|17|5")
    # drawn from those the user's click factors favour; 0 (the default) adds none.
    history: Annotated[int, Field(ge=0, le=MAX_SEQUENCE)] = 0

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticFunnel":
        values = self.rows * (self.dense + 8 + self.history) + (self.users + self.items) * \
            self.factors
        if values > MAX_VALUES:
            raise ValueError(f"rows x (dense + 8) + (users + items) x factors = {values:,} "
                             f"values; at most {MAX_VALUES:,} are generated")
        return self

    def columns(self) -> dict[str, Values]:
        return {"user": IDS, "item": IDS, "category": IDS,
                **{f"d_{i}": REAL for i in range(self.dense)},
                **dict.fromkeys(FUNNEL_LABELS, BINARY),
                **({"history": TEXT} if self.history else {})}


Fraction = Annotated[float, Field(gt=0, lt=1)]


class CsvOptions(Params):
    """How a CSV file is read. `strip`: trim spaces around text fields (raw UCI files
    separate fields by ", "); `skip_rows`: junk lines before the header (the Adult test
    file's `|1x3 Cross validator`); `comment`: lines starting with it are skipped;
    `encoding`: the file's text encoding (MovieLens-100K is latin-1)."""

    sep: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    columns: tuple[str, ...] | None = None
    na: tuple[str, ...] = ("", "NA", "NaN", "nan", "?")
    strip: bool = True
    skip_rows: Annotated[int, Field(ge=0, le=MAX_ROWS)] = 0
    comment: str | None = Field(None, min_length=1, max_length=1)
    encoding: str = Field("utf8", min_length=1, max_length=40)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (e.g. utf8, latin-1, cp1252)")
        return v


# --- joins (docs/data.md): side tables joined to every file of a source ---
def _join_call(value: Any) -> Any:
    """A `csv("users.csv", on=user_id)` call inside `join=[...]` as the fields of JoinTable
    (its kind and its arguments); anything else is left to the model to refuse."""
    if not isinstance(value, Call):
        return value
    fields: dict[str, Any] = {"kind": value.name}
    if value.args:
        fields["path"] = plain(value.args[0])
    if len(value.args) > 1:
        fields["on"] = plain(value.args[1])
    return fields | {kw.key: plain(kw.value) for kw in value.kwargs}


class JoinTable(CsvOptions):
    """A side table joined on the key columns `on` (one name or a list): `how=inner` drops
    the rows without a match, `how=left` keeps them with missing values. CSV options apply
    to `csv(...)`; `parquet(...)` takes only path, on, how."""

    kind: Literal["csv", "parquet"]
    path: str = Field(min_length=1)
    on: tuple[str, ...] = Field(min_length=1)
    how: Literal["inner", "left"] = "inner"

    @model_validator(mode="before")
    @classmethod
    def _from_call(cls, value: Any) -> Any:
        value = _join_call(value)
        if isinstance(value, dict) and isinstance(value.get("on"), str):
            value = value | {"on": (value["on"],)}
        return value


class FileSource(Params):
    """One `path` split by `split=` fractions (train, val[, test]; else `train val=`),
    stratified on the binary label `stratify=` (else a binary first task); or named
    `train=`, `val=` and optional `test=` files. Paths are relative to the spec."""

    path: str | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None
    split: tuple[Fraction, ...] | None = None
    stratify: str | None = None
    join: tuple[JoinTable, ...] = ()

    @field_validator("split")
    @classmethod
    def _fractions(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and (len(v) not in (2, 3) or abs(sum(v) - 1) > 1e-6):
            raise ValueError("split= is [train, val] or [train, val, test], summing to 1")
        return v


class CsvSource(CsvOptions, FileSource):
    """A CSV source (options in CsvOptions; files and split in FileSource)."""


class ParquetSource(FileSource):
    """`stream=true`: training reads record batches through a shuffle buffer of `buffer`
    rows instead of loading the file (bounded memory)."""

    stream: bool = False
    buffer: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 65536
