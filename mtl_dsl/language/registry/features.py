"""Parameter models of the input statements: sparse (categorical) and sequence features,
dense columns, and concatenated inputs."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .bounds import MAX_COLUMNS, MAX_DIM, MAX_SEQUENCE, MAX_TABLE, Params, Width

DEFAULT_EMBEDDING_DIM = 16


class SparseParams(Params):
    """A categorical column embedded by a table; `share` reuses another feature's table.

    `vocab=auto`: ids by frequency on the training split; `vocab=N`: the column holds
    ids 0..N-1; `hash=N`: values hashed into N buckets. For `vocab=auto` and `hash=N` alike,
    values seen fewer than `min_count` times on the training split, beyond the `max_ids`
    most frequent, unseen (auto) or missing share id 0 (docs/data.md, "Encoders")."""

    vocab: Union[Annotated[int, Field(ge=1, le=MAX_TABLE)], Literal["auto"]] = "auto"
    dim: Annotated[int, Field(ge=1, le=MAX_DIM)] | None = None  # None: the shared table's
    share: str | None = None  # dim, else DEFAULT_EMBEDDING_DIM
    column: str | None = None
    min_count: Annotated[int, Field(ge=1, le=MAX_TABLE)] = 1
    hash: Annotated[int, Field(ge=1, le=MAX_TABLE - 1)] | None = None
    max_ids: Annotated[int, Field(ge=1, le=MAX_TABLE)] | None = None  # the most frequent kept
    # how TorchRec shards the table over processes (docs/scaling.md): auto by its size
    shard: Literal["auto", "data_parallel", "table_wise", "row_wise", "table_row_wise",
                   "column_wise"] = "auto"

    @field_validator("hash")
    @classmethod
    def _hash_or_vocab(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("vocab", "auto") != "auto":
            raise ValueError("hash= replaces vocab=; give one of them")
        return v

    @model_validator(mode="after")
    def _limits_need_values(self) -> "SparseParams":
        if self.vocab != "auto" and (self.min_count > 1 or self.max_ids is not None):
            raise ValueError("min_count= and max_ids= need vocab=auto or hash=N: a vocab=N "
                             "column holds its ids already")
        return self

    def limited(self) -> bool:
        """Whether rare values are cut (`min_count` > 1 or `max_ids`): then the encoders
        keep the list of kept values, hashed tables too."""
        return self.min_count > 1 or self.max_ids is not None

    @field_validator("shard")
    @classmethod
    def _shard_by_owner(cls, v: str, info: ValidationInfo) -> str:
        if v != "auto" and info.data.get("share") is not None:
            raise ValueError("shard= belongs to the table's owner; set it on the feature "
                             "named by share=")
        return v

    def table_rows(self) -> int | None:
        """Rows of the table this feature owns, when the spec alone fixes them: `hash=N` has
        N buckets plus row 0 for missing values, `vocab=N` has N rows; `vocab=auto` is sized by
        the data (None). The one statement of this rule: the data's encoders, the compiler and
        the diagram all read it."""
        if self.hash is not None:
            return self.hash + 1
        return None if self.vocab == "auto" else self.vocab


# ---- DUPN (Ni et al., KDD 2018): sequence encoders and attention pooling ----
class AttentionPoolParams(Params):
    """Attention pooling of a sequence's states h_t: a_t = softmax_t(v . tanh(W h_t + U q + b))
    over the row's ids, q the embedding of the sparse feature `query` (the item or context
    the sequence is read for; none: a learnt vector). `width`: the attention's hidden width."""

    query: str | None = None
    width: Width = 32


class SequenceParams(SparseParams):
    """A list of ids per row (a behaviour history), embedded and pooled to one vector.

    Text cells are split on `sep`; Parquet list cells are read as they are. At most
    `max_len` ids per row are kept (the last ones). `encoder=gru|lstm` runs a recurrent
    layer (hidden width `dim`) over the embedded ids before pooling, `encoder=transformer` one
    causal single-head Transformer layer with learnt positions; `pool=attention(...)` weighs
    the states by attention (DUPN), `pool=last` keeps the last real id's state."""

    pool: Union[Literal["mean", "sum", "last"], AttentionPoolParams] = "mean"
    encoder: Literal["none", "gru", "lstm", "transformer"] = "none"
    sep: str = "|"
    max_len: Annotated[int, Field(ge=1, le=MAX_SEQUENCE)] = 50


class DenseParams(Params):
    """Numeric columns: one column, or `size` columns named NAME_0..NAME_{size-1}
    (NAME_1..NAME_size with `start=1`; NAME is `column` when given)."""

    size: Annotated[int, Field(ge=1, le=MAX_COLUMNS)] = 1
    column: str | None = None
    start: Annotated[int, Field(ge=0, le=MAX_TABLE)] = 0
    norm: Literal["none", "standard", "minmax", "log"] = "standard"
    missing: Literal["error", "mean", "zero"] = "error"  # mean: of the training split


class ConcatParams(Params):
    parts: tuple[str, ...] = Field(min_length=1)
