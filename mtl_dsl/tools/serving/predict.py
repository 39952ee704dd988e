"""Prediction and evaluation from a run's checkpoint: `mtl predict` and `mtl eval`.

A checkpoint carries the spec text, the weights and the encoders fitted on the
training split (vocabularies, hash buckets, normalisation and fill statistics),
so new data is encoded exactly as training data was. The data file is read with
the spec's source options (separator, header, column names, NA tokens), only the
columns the model needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.frames import needed_columns
from ...data.labels import check_derived, encode_labels, raw_columns, stratify_label
from ...data.sources import csv_width, read_file, resolve_path, source_columns, \
    table_frame
from ...data.tensors import to_tensors
from ...data.values import Frame, check_columns, in_file
from ...language import overrides
from ...language import registry as reg
from ...language.diagnostics import DataError
from ...language.ir import Setting, Spec
from ...training.checkpoints import Checkpoint, load_checkpoint
from ...training.metrics import Undefined, evaluate
from .passthrough import clash, joins_from
from .bundle import write_columns

OUT_SUFFIXES = (".csv", ".parquet")


def open_run(path: str | Path) -> Checkpoint:
    """A run folder (its `checkpoint.pt`) or a checkpoint file."""
    path = Path(path)
    file = path / "checkpoint.pt" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no checkpoint at {file}")
    return load_checkpoint(file)


def check_same_model(spec: Spec, ck: Checkpoint, force: bool = False) -> None:
    """The given spec must describe the checkpoint's model (E704 names the first structural
    difference; data source and train settings may differ); `force` skips the check."""
    if force:
        return
    diff = first_difference(ck.spec, spec)
    if diff is not None:
        raise DataError(f"the checkpoint was trained from a different spec: {diff}",
                        code="E704",
                        hint="pass the spec the run was trained from (the run folder's "
                             "spec.mtl), or --force to use the checkpoint's own model anyway")


def data_setting(spec: Spec | None, ck: Checkpoint, data: str | Path) -> Setting:
    """`data` read with the options of the spec's source (else the checkpoint's), joined
    with its `join=` tables, whose paths stay relative to that spec."""
    source = spec if spec is not None and spec.data is not None else ck.spec
    return joins_from(overrides.data_setting(source.data, str(data)), source.base_dir)


def output_columns(ck: Checkpoint) -> list[str]:
    """The prediction columns, in order: a task's name, or `TASK_0 ..` per class."""
    return [c for t in ck.spec.tasks for c in ([t.name] if t.out_dim == 1 else
                                               [f"{t.name}_{i}" for i in range(t.out_dim)])]


def unlabelled(ck: Checkpoint, setting: Setting) -> Setting:
    """A header-less file to predict on may lack the columns only labels read: when its
    width is that of `columns=` without them, those are the names of its fields."""
    p = setting.params
    if not isinstance(p, reg.CsvSource) or p.header or not p.columns or p.join:
        return setting
    path = resolve_path(p.path, Path.cwd())
    if not path.is_file() or csv_width(p, path) == len(p.columns):
        return setting
    features = set(ck.encoders.columns)
    labels_only = set(needed_columns(ck.spec)) - features
    names = tuple(c for c in p.columns if c not in labels_only)
    if csv_width(p, path) != len(names):
        return setting  # the width check says what is wrong
    return setting.model_copy(update={"params": p.model_copy(update={"columns": names})})


def read(ck: Checkpoint, setting: Setting, labels: bool, keep: tuple[str, ...] = ()) -> Frame:
    """The feature columns (and the label columns, when `labels`; the `keep` columns) of a
    data file."""
    present = source_columns(setting, Path.cwd())
    wanted = dict.fromkeys(ck.encoders.columns)
    check_columns({c: "--keep" for c in keep}, present)
    wanted |= dict.fromkeys(keep)
    if labels:
        wanted |= dict.fromkeys(needed_columns(_without_stratify(ck.spec)))
    check_columns({c: "the model" for c in wanted}, present)
    table = read_file(setting, Path.cwd(), setting.params.path, list(wanted))
    return table_frame(table, list(wanted))


def _without_stratify(spec: Spec) -> Spec:
    """Evaluation needs the tasks' labels, not the training split's stratify= label."""
    if stratify_label(spec) is None:
        return spec
    params = spec.data.params.model_copy(update={"stratify": None})
    return spec.model_copy(update={"data": spec.data.model_copy(update={"params": params})})


def predictions(ck: Checkpoint, frame: Frame, batch: int = 8192) -> dict[str, np.ndarray]:
    """Output column -> values: a binary task's probability, a regression value, or one
    probability column per class (`TASK_0`, `TASK_1`, ...) of a multiclass task."""
    data = to_tensors(ck.encoders.encode(frame))
    chunks: dict[str, list[torch.Tensor]] = {}
    ck.model.eval()
    for b in data.batches(batch, shuffle=False):
        for task, y in ck.model.predict(b).items():
            chunks.setdefault(task, []).append(y.float())
    out: dict[str, np.ndarray] = {}
    for t in ck.spec.tasks:
        y = torch.cat(chunks[t.name]).numpy() if chunks else np.zeros(0, np.float32)
        if y.ndim == 2:
            out |= {f"{t.name}_{c}": y[:, c] for c in range(y.shape[1])}
        else:
            out[t.name] = y
    return out


def write(columns: dict[str, np.ndarray], out: str | Path) -> Path:
    """Write columns to a .csv or .parquet file (by its suffix; another is refused)."""
    out = Path(out)
    if out.suffix not in OUT_SUFFIXES:
        raise ValueError(f"--out must end in {' or '.join(OUT_SUFFIXES)}, not '{out.suffix}'")
    return write_columns(columns, out)


def predict_file(ck: Checkpoint, setting: Setting, out: str | Path,
                 keep: tuple[str, ...] = ()) -> tuple[Path, int]:
    """Per-task predictions for every row of the data file, after its `keep` columns;
    (output path, rows)."""
    clash(keep, output_columns(ck))
    setting = unlabelled(ck, setting)
    frame = read(ck, setting, labels=False, keep=keep)
    preds = in_file(setting.params.path, lambda: predictions(ck, frame))
    columns = {c: frame[c] for c in keep} | preds
    return write(columns, out), len(next(iter(preds.values()))) if preds else 0


def evaluate_file(ck: Checkpoint, setting: Setting) -> tuple[dict, int]:
    """Every task's metrics (and loss) on the data file; (metrics, rows)."""
    spec = _without_stratify(ck.spec)
    frame = read(ck, setting, labels=True)

    def encoded():
        arrays = ck.encoders.encode(frame) | encode_labels(spec, frame)
        if len(next(iter(arrays.values()))) == 0:
            raise DataError("the data file has no rows")
        check_derived(spec, frame)  # a label matching no row: the values differ in this file
        return to_tensors(arrays)

    data = in_file(setting.params.path, encoded)
    metrics = evaluate(ck.model, data, spec.tasks)
    scores = {f"{t}.{k}": v for t, m in metrics.items() for k, v in m.items() if k != "loss"}
    if scores and all(isinstance(v, Undefined) for v in scores.values()):
        why = "; ".join(f"{name}: {v.reason}" for name, v in scores.items())
        raise DataError(f"{setting.params.path}: no metric can be computed on these rows ({why})",
                        hint="evaluate on rows that hold both classes of each binary label")
    return metrics, len(data)


STRUCTURE = ("features", "derived_labels", "inputs", "experts", "gates", "towers", "critics",
             "tasks", "transfers")  # the model a checkpoint's weights belong to


def first_difference(trained: Spec, given: Spec) -> str | None:
    """The first structural difference between two specs' models, in words, or None."""
    for part in STRUCTURE:
        old = {n.name: _plain(n) for n in dict(trained)[part]}
        new = {n.name: _plain(n) for n in dict(given)[part]}
        what = part.rstrip("s").replace("_", " ")
        for name in old:
            if name not in new:
                return f"{what} '{name}' is in the checkpoint, not in the spec"
        for name in new:
            if name not in old:
                return f"{what} '{name}' is in the spec, not in the checkpoint"
        for name in old:
            where = _diff(old[name], new[name], "")
            if where is not None:
                return f"{what} '{name}': {where}"
    return None


def _plain(x):
    """An IR node as plain values, without source positions (spans are not structure)."""
    import dataclasses

    from pydantic import BaseModel

    if isinstance(x, BaseModel):
        return {k: _plain(v) for k, v in x if k not in ("span", "arg_spans")}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)
                if f.name != "span"}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _diff(old, new, path: str) -> str | None:
    """Where two plain values first differ: `path: OLD in the checkpoint, NEW in the spec`."""
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        for k in old:
            found = _diff(old[k], new[k], f"{path}.{k}" if path else k)
            if found is not None:
                return found
        return None
    if old == new:
        return None
    shown = (repr(v)[:60] for v in (old, new))
    return f"{path or 'value'} is {next(shown)} in the checkpoint, {next(shown)} in the spec"


def label_columns(spec: Spec) -> list[str]:
    return [c for t in spec.tasks for c in raw_columns(spec, t.label.name)]
