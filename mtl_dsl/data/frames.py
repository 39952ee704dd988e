"""The spec's data as frames: which columns it reads, checked before any row is read."""

from __future__ import annotations

import numpy as np

from ..language.diagnostics import DataError
from ..language.ir import Spec
from .labels import raw_columns, stratify_label
from .sources import load_parts, source_columns
from .values import Frame, check_columns


def needed_columns(spec: Spec) -> dict[str, str]:
    """Every column the spec reads -> what reads it (for messages)."""
    out: dict[str, str] = {}
    for f in spec.features:
        for c in f.columns:
            out.setdefault(c, f"feature '{f.name}'")
    for t in spec.tasks:
        for c in raw_columns(spec, t.label.name):
            out.setdefault(c, f"the label of task '{t.name}'")
        for c in raw_columns(spec, t.where.name) if t.where is not None else ():
            out.setdefault(c, f"where= of task '{t.name}'")
        if t.params.group is not None:
            out.setdefault(t.params.group, f"group= of task '{t.name}'")
    if (label := stratify_label(spec)) is not None:
        for c in raw_columns(spec, label):
            out.setdefault(c, "stratify= of the data source")
    return out


def load_all(spec: Spec) -> dict[str, Frame]:
    """The spec's data, only the columns it needs (checked before reading rows): `{"all":
    frame}` for one source, else the named `train`/`val`/`test` files' frames."""
    if spec.data is None:
        raise DataError("the spec names no data source", hint="add a `data` line or pass --data")
    needed = needed_columns(spec)
    check_columns(needed, source_columns(spec.data, spec.base_dir))
    return load_parts(spec.data, spec.base_dir, list(needed))


def load(spec: Spec) -> Frame:
    """The spec's data as one frame (named files concatenated: train, val, test)."""
    parts = list(load_all(spec).values())
    return parts[0] if len(parts) == 1 else \
        {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
