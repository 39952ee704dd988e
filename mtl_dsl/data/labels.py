"""Labels: checked label arrays, and derived labels (`label ctcvr = click & purchase`,
`label rich = income == "50000+."`).

A derived label's expression is evaluated column-wise with numpy over the whole frame,
once, before the split; the result is a 0/1 float column like any other label. Every
label problem is a :class:`DataError` naming the column and row (docs/data.md).
"""

from __future__ import annotations

import numpy as np

from ..language import registry as reg
from ..language.diagnostics import ROWS_HINT, DataError
from ..language.ir import DerivedLabel, Spec
from ..language.syntax import Compare, Expr, Not, Number, Ref, String
from .values import (Frame, finite, first_row, group_ids, group_key, label_key,
                     mask_key, no_nan, numeric, sample_values)

STRATA = "strata"  # encode_labels' key for the stratify= label (not a model input)

_COMPARE = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}


def raw_columns(spec: Spec, name: str) -> list[str]:
    """The data columns a label name stands for (itself, or what its expression reads)."""
    derived = {d.name: d for d in spec.derived_labels}
    if name not in derived:
        return [name]
    return [c for ref in derived[name].refs for c in raw_columns(spec, ref.name)]


def add_derived(spec: Spec, frame: Frame) -> Frame:
    """The frame with the derived labels that tasks use (`label=`, `where=`) computed into
    it, in declaration order; unused ones are skipped (their columns may not be loaded)."""
    used = {t.label.name for t in spec.tasks} | {t.where.name for t in spec.tasks if t.where}
    needed = {c for name in used for c in _closure(spec, name)}
    out = dict(frame)
    for d in spec.derived_labels:
        if d.name in needed:
            out[d.name] = derived_column(d, out)
    return out


def derived_column(label: DerivedLabel, frame: Frame) -> np.ndarray:
    """A derived label's 0/1 float32 column; `frame` must hold every name it reads."""
    return _truth(_eval(label.expr, frame, label.name), label.name).astype(np.float32)


def with_derived(spec: Spec, frame: Frame, names: list[str]) -> Frame:
    """The frame with the derived labels `names` (and those they read) computed, also when
    no task uses them (e.g. the label a split is stratified on)."""
    derived = {d.name: d for d in spec.derived_labels}
    out = dict(frame)

    def compute(name: str) -> None:
        d = derived.get(name)
        if d is None or name in out:
            return
        for ref in d.refs:
            compute(ref.name)
        out[name] = derived_column(d, out)

    for name in names:
        compute(name)
    return out


def stratify_label(spec: Spec) -> str | None:
    """The label the data source's `stratify=` names, if any."""
    p = spec.data.params if spec.data is not None else None
    return p.stratify if isinstance(p, reg.FileSource) else None


def encode_labels(spec: Spec, frame: Frame) -> dict[str, np.ndarray]:
    """`label:TASK` -> checked label array (float32; int64 for multiclass), and `mask:TASK`
    (bool) for tasks whose metrics are restricted by `where=`. Derived labels are computed
    here from their columns."""
    frame = add_derived(spec, frame)
    out = {label_key(t.name): _label(t.kind, t.label.name, frame[t.label.name],
                                     _classes(t.params), t.name)
           for t in spec.tasks}
    for t in spec.tasks:
        if t.where is not None:
            what = f"where= of task '{t.name}'"
            out[mask_key(t.name)] = _label("binary", t.where.name, frame[t.where.name], None,
                                           t.name, what).astype(bool)
    for column in dict.fromkeys(t.params.group for t in spec.tasks if t.params.group):
        out[group_key(column)] = group_ids(frame[column])  # grouped metrics' groups
    if (name := stratify_label(spec)) is not None:
        frame = with_derived(spec, frame, [name])
        out[STRATA] = _label("binary", name, frame[name], None, "",
                             "stratify= of the data source")
    return out


def _classes(params: reg.Params) -> int | None:
    return params.classes if isinstance(params, reg.MulticlassTask) else None


def _label(kind: str, name: str, col: np.ndarray, classes: int | None, task: str,
           what: str | None = None) -> np.ndarray:
    what = what or f"label of {kind} task '{task}'"
    y = numeric(col, name, what)
    no_nan(y, name, what)
    finite(y, name, what)
    if kind == "binary":
        bad = (y != 0) & (y != 1)
        if bad.any():
            i = first_row(bad)
            raise DataError(f"column '{name}' ({what}) must be 0 or 1; row {i + 1} has "
                            f"{y[i]:g}", hint=ROWS_HINT)
        return y.astype(np.float32)
    if kind == "multiclass":
        bad = (y != np.round(y)) | (y < 0) | (y >= classes)
        if bad.any():
            i = first_row(bad)
            raise DataError(f"column '{name}' ({what}) must hold class ids 0..{classes - 1}; "
                            f"row {i + 1} has {y[i]:g}",
                            hint=f"the task declares classes={classes}")
        return y.astype(np.int64)
    return y.astype(np.float32)


class NoMatch(DataError):
    """A derived label that matches none of the rows it was computed on (E701)."""


def check_derived(spec: Spec, frame: Frame) -> None:
    """A derived label a task learns from must match some rows (a typo in a compared value
    would otherwise train on all zeros)."""
    used = {t.label.name for t in spec.tasks} | {stratify_label(spec)}
    derived = with_derived(spec, add_derived(spec, frame), [n for n in used if n])
    for d in spec.derived_labels:
        if d.name in used and not derived[d.name].any():
            shown = [f"column '{ref.name}' holds {sample_values(frame[ref.name])}"
                     for ref in d.refs if ref.name in frame]
            raise NoMatch(f"label '{d.name}' matches no rows of the data"
                            + (f"; {'; '.join(shown)}" if shown else ""),
                            hint=f"check the values compared in `label {d.name} = ...` "
                                 "(text is compared with surrounding spaces trimmed)")


def _closure(spec: Spec, name: str) -> list[str]:
    """A label name and every derived label it is made of."""
    derived = {d.name: d for d in spec.derived_labels}
    if name not in derived:
        return [name]
    return [name] + [n for ref in derived[name].refs for n in _closure(spec, ref.name)]


def _eval(expr: Expr, frame: Frame, label: str):
    if isinstance(expr, (Number, String)):
        return expr.value
    if isinstance(expr, Ref):
        return frame[expr.name]
    if isinstance(expr, Not):
        return ~_truth(_eval(expr.operand, frame, label), label, expr)
    if isinstance(expr, Compare):
        return _compare(expr, frame, label)
    left = _truth(_eval(expr.left, frame, label), label, expr.left)
    right = _truth(_eval(expr.right, frame, label), label, expr.right)
    return left & right if expr.op == "&" else left | right


def _compare(expr: Compare, frame: Frame, label: str) -> np.ndarray:
    left, right = _eval(expr.left, frame, label), _eval(expr.right, frame, label)
    if isinstance(left, str) or isinstance(right, str) or _is_text(left) or _is_text(right):
        left, right = _as_text(left), _as_text(right)
    return np.asarray(_COMPARE[expr.op](left, right), dtype=bool)


def _is_text(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind in "OUS"


def _as_text(x):
    """Strings compare as stripped text (raw CSVs often pad their fields)."""
    if isinstance(x, np.ndarray):
        return np.array([("" if v is None else str(v)).strip() for v in x], dtype=object)
    return str(x).strip()


def _truth(x, label: str, where: Expr | None = None) -> np.ndarray:
    """A 0/1 column (or a comparison's result) as booleans; anything else is a data error."""
    if isinstance(x, np.ndarray) and x.dtype == bool:
        return x
    column = where.name if isinstance(where, Ref) else None
    values = np.asarray(x)
    if values.dtype.kind not in "biuf":
        raise DataError(f"label '{label}' uses column '{column}' as true/false, but it holds "
                        "text", hint=f"compare it instead, e.g. {column} == \"yes\"")
    bad = np.isnan(values) | ((values != 0) & (values != 1)) if values.dtype.kind == "f" \
        else (values != 0) & (values != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"label '{label}' uses column '{column}' as true/false, but row "
                        f"{row + 1} holds {values[row]!r}",
                        hint="columns combined with & | ! must be 0/1; compare other values "
                             "(e.g. col > 0)")
    return values.astype(bool)
