"""From the spec's data to training tensors: checked labels, a seeded split, encoders
fitted on the training rows only, everything encoded once.

Three ways in, one encoding plan: one frame is split (:func:`split_parts`); named
train/val/test files are used as they are (without a val file, validation rows are split
off the training file); a streamed Parquet source is fitted chunk by chunk
(:mod:`mtl_dsl.data.streaming`). Errors name the file and its row (docs/data.md).
"""

from __future__ import annotations


import numpy as np

from ..language import registry as reg
from ..language.diagnostics import DataError
from ..language.ir import Spec
from .encoders import Encoders
from .frames import load_all, needed_columns
from .labels import STRATA, check_derived, encode_labels
from .sources import file_parts
from .splits import split_parts, split_rows
from .streaming import prepare_stream
from .synthetic import SYNTHETIC
from .tensors import Prepared, to_tensors
from .values import Frame, check_columns, in_file, label_key



def prepare(spec: Spec, frame: Frame | None = None, seed: int | None = None) -> Prepared:
    """Load (or take) the data, check it, split it, fit encoders on train, encode once."""
    if frame is None and streamed(spec):
        return prepare_stream(spec, seed)
    parts = load_all(spec) if frame is None else {"all": frame}
    if "all" not in parts:
        return _prepare_files(spec, parts, seed)
    if frame is None and spec.data.kind not in SYNTHETIC:  # errors name the file
        return in_file(file_parts(spec.data)["all"],
                       lambda: _prepare_one(spec, parts["all"], seed))
    return _prepare_one(spec, parts["all"], seed)


def streamed(spec: Spec) -> bool:
    """Whether the spec's source is a Parquet source read with `stream=true`."""
    p = spec.data.params if spec.data is not None else None
    return isinstance(p, reg.ParquetSource) and p.stream


def _prepare_one(spec: Spec, frame: Frame, seed: int | None) -> Prepared:
    check_columns(needed_columns(spec), frame.keys())
    labels = encode_labels(spec, frame)
    n = len(next(iter(labels.values())))
    if n < 2:
        raise DataError(f"the data has {n} row(s); training needs at least two",
                        hint="one row to train on and one to validate")
    check_derived(spec, frame)
    rows = split_parts(spec, labels, seed)
    encoders = Encoders.fit(spec, frame, rows["train"])
    labels.pop(STRATA, None)
    data = to_tensors({**encoders.encode(frame), **labels})
    test = data.take(rows["test"]) if "test" in rows else None
    return Prepared(data.take(rows["train"]), data.take(rows["val"]), encoders, test)


def _prepare_files(spec: Spec, parts: dict[str, Frame], seed: int | None) -> Prepared:
    files = file_parts(spec.data)
    labels = {k: in_file(files[k], lambda f=f: encode_labels(spec, f)) for k, f in parts.items()}
    for k, f in parts.items():  # a label that matches nothing in any file is an error
        in_file(files[k], lambda f=f: check_derived(spec, f))
    train = parts["train"]
    rows = np.arange(len(labels["train"][label_key(spec.tasks[0].name)]))
    val_rows = None
    if "val" not in parts:  # validation rows come from the training file
        rows, val_rows = split_rows(spec, labels["train"], seed)
    encoders = in_file(files["train"], lambda: Encoders.fit(spec, train, rows))
    sets = {}
    for k, f in parts.items():
        labels[k].pop(STRATA, None)
        sets[k] = to_tensors({**in_file(files[k], lambda f=f: encoders.encode(f)), **labels[k]})
    val = sets["val"] if val_rows is None else sets["train"].take(val_rows)
    return Prepared(sets["train"].take(rows), val, encoders, sets.get("test"))
