"""Column values: frames, checked numbers, canonical category keys, list cells.

Every data module reads cells through these helpers, so a value is checked and keyed the
same way whether it arrives in one frame or in streamed chunks (docs/data.md).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import numpy as np

from ..language.diagnostics import ROWS_HINT, DataError, did_you_mean

T = TypeVar("T")

Frame = dict[str, np.ndarray]


def check_columns(needed: dict[str, str], present) -> None:
    """A DataError for the first of the `needed` columns (column -> what reads it) that is
    not `present`, with the closest present name."""
    present = list(present)
    missing = [c for c in needed if c not in set(present)]
    if missing:
        c = missing[0]
        more = f" ({len(missing)} columns missing)" if len(missing) > 1 else ""
        raise DataError(f"column '{c}' is not in the data; {needed[c]} reads it{more}",
                        hint=did_you_mean(c, present) or
                        f"the data has: {', '.join(present[:12])}"
                        + (" ..." if len(present) > 12 else ""))


def at_rows(err: DataError, name: str, start: int) -> DataError:
    """`err` about a chunk of a file, as an error about the file: prefixed with its `name`,
    and its "row N" counted from the start of the file (the chunk begins at row `start`+1)."""
    import re

    d = err.diagnostics[0]
    message = re.sub(r"\brow (\d+)", lambda m: f"row {int(m.group(1)) + start}", d.message)
    return DataError(f"{name}: {message}", d.hint, d.code)


def first_row(bad: np.ndarray) -> int:
    """Index of the first True in a mask (the row a message names)."""
    return int(np.flatnonzero(bad)[0])


def numeric(col: np.ndarray, name: str, what: str) -> np.ndarray:
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


def no_nan(x: np.ndarray, name: str, what: str,
           hint: str = "fill or drop missing values before training") -> None:
    """A DataError counting the missing values of `x` and naming the first one's row."""
    bad = np.isnan(x)
    if bad.any():
        raise DataError(f"column '{name}' ({what}) has {int(bad.sum())} missing value(s), "
                        f"the first at row {first_row(bad) + 1}", hint=hint)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def finite(x: np.ndarray, name: str, what: str) -> None:
    """A DataError naming the first row of `x` holding ±inf or a value beyond float32's
    range (training computes in float32, where it would become inf and then NaN). NaN is
    left to the missing-value rules."""
    with np.errstate(invalid="ignore"):
        bad = np.abs(x) > FLOAT32_MAX
    if bad.any():
        i = first_row(bad)
        kind = "an infinite value" if np.isinf(x[i]) else "a value beyond float32's range"
        raise DataError(f"column '{name}' ({what}) has {kind} at row {i + 1}: {x[i]:g}"
                        + (f" ({int(bad.sum())} such rows)" if bad.sum() > 1 else ""),
                        hint=f"values must be finite and within ±{FLOAT32_MAX:.3g}; "
                             f"fix or drop them ({ROWS_HINT})")


def dense_matrix(frame: Frame, columns: tuple[str, ...], feature: str, norm: str,
                 missing: str) -> np.ndarray:
    """The checked (N, size) float64 matrix of a dense feature; NaN where a value is
    missing, unless missing='error' makes that an error."""
    what = f"dense feature '{feature}'"
    parts = []
    for c in columns:
        x = numeric(frame[c], c, what)
        finite(x, c, what)
        if missing == "error":
            no_nan(x, c, what, "fill or drop them, or declare the feature with "
                               "missing=mean or missing=zero")
        if norm == "log" and (x < 0).any():
            i = first_row(x < 0)
            raise DataError(f"column '{c}' ({what}, norm=log) must be non-negative; row "
                            f"{i + 1} has {x[i]:g}", hint="use norm=standard for signed values")
        parts.append(x)
    return np.stack(parts, axis=1) if parts else np.zeros((0, 0))


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


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical key of each distinct value, index of each value's distinct value)."""
    try:
        uniq, inverse = np.unique(values, return_inverse=True)
    except TypeError:  # an object column mixing numbers and text
        uniq, inverse = np.unique(np.array([_key(v) for v in values], dtype=str),
                                  return_inverse=True)
    return _canon(uniq), inverse.reshape(-1)


def is_missing(col: np.ndarray) -> np.ndarray:
    """Which cells are missing: NaN, or None in a text column."""
    if col.dtype.kind == "f":
        return np.isnan(col)
    if col.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in col], bool)
    return np.zeros(len(col), bool)


def key_counts(col: np.ndarray) -> dict[str, int]:
    """How often each canonical key occurs among the present cells of `col`."""
    keys, inverse = factorize(col[~is_missing(col)])
    return dict(zip(keys.tolist(), np.bincount(inverse, minlength=len(keys)).tolist()))


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


def sample_values(col: np.ndarray, k: int = 5) -> str:
    """The `k` most frequent values of a column, quoted, for a message."""
    keys, inverse = factorize(col[~is_missing(col)])
    counts = np.bincount(inverse, minlength=len(keys))
    top = [keys[i] for i in np.argsort(-counts, kind="stable")[:k]]
    more = ", ..." if len(keys) > k else ""
    return ", ".join(repr(str(v).strip()) for v in top) + more


def label_key(task: str) -> str:
    """The batch key of a task's label."""
    return f"label:{task}"


def mask_key(task: str) -> str:
    """Rows a task's metrics are computed on (its `where=` label is 1)."""
    return f"mask:{task}"


def in_file(name: str, run: Callable[[], T]) -> T:
    """Run `run()`; a DataError's message is prefixed with the file it is about."""
    try:
        return run()
    except DataError as err:
        d = err.diagnostics[0]
        raise DataError(f"{name}: {d.message}", d.hint, d.code) from None


def group_key(column: str) -> str:
    """The batch key of a group= column's ids (grouped metrics: gauc, ndcg@k, recall@k)."""
    return f"group:{column}"


def group_ids(col: np.ndarray) -> np.ndarray:
    """A group column as int64 ids, equal values equal ids (compared as text, so 7 and
    "7" are one group and a missing value is a group of its own)."""
    _, ids = np.unique(np.asarray(col).astype(str), return_inverse=True)
    return ids.astype(np.int64).reshape(-1)
