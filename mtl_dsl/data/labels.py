"""Derived labels: `label ctcvr = click & purchase`, `label rich = income == "50000+."`.

An expression is evaluated column-wise with numpy over the whole frame, once,
before the split; the result is a 0/1 float column like any other label.
"""

from __future__ import annotations

import numpy as np

from ..language.syntax import Compare, Expr, Not, Number, Ref, String
from ..language.diagnostics import DataError
from ..language.ir import Spec

Frame = dict[str, np.ndarray]

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
            out[d.name] = _truth(_eval(d.expr, out, d.name), d.name).astype(np.float32)
    return out


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
