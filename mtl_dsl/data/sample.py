"""`mtl check`'s look at the data: the first rows of every file the spec reads, checked as
training would check them (labels that are not what their task needs, dense columns that are
not numbers or not finite, derived labels that match no rows), with the same messages, in time
bounded by the sample rather than the file."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..language import registry as reg
from ..language.check import Checked
from ..language.diagnostics import DataError, Diagnostic
from ..language.ir import Spec

if TYPE_CHECKING:
    from .values import Frame

# The reading and checking modules import numpy (about 50 ms of `mtl check`): they are
# imported in the functions that read or draw rows, which a generated source whose declared
# columns already fit the spec never calls (`_fits_without_draw`).

SAMPLE_ROWS = 10_000  # rows read from each file: enough to meet most label values
SYNTHETIC_ROWS = 1_000  # a draw checks what a generator's declared columns cannot vouch for


def sample_frames(spec: Spec, rows: int = SAMPLE_ROWS) -> dict[str, tuple[Frame, bool]]:
    """The first `rows` rows of each of the spec's files (a small synthetic draw), each with
    whether that is the whole file."""
    from .frames import needed_columns
    from .sources import file_parts, read_file, table_frame
    from .synthetic import SYNTHETIC

    setting, columns = spec.data, list(needed_columns(spec))
    if setting.kind in SYNTHETIC:
        params = setting.params.model_copy(update={"rows": min(SYNTHETIC_ROWS, setting.params.rows)})
        frame = SYNTHETIC[setting.kind](params)
        return {"generated data": ({c: frame[c] for c in columns}, params.rows == setting.params.rows)}
    out = {}
    for text in file_parts(setting).values():
        frame = table_frame(read_file(setting, spec.base_dir, text, columns, rows), columns)
        out[text] = (frame, len(next(iter(frame.values()), [])) < rows)
    return out


def check_sample(spec: Spec, rows: int = SAMPLE_ROWS) -> list[Diagnostic]:
    """What training would say of these rows: its errors, at the spec's data statement. A
    derived label matching none of the sampled rows is an error when the sample is the whole
    file, else a warning (W007): the rows after the sample may hold its matches."""
    if _fits_without_draw(spec):
        return []
    from .labels import NoMatch, check_derived
    from .values import in_file

    found: list[Diagnostic] = []
    for name, (frame, whole) in sample_frames(spec, rows).items():
        try:
            in_file(name, lambda frame=frame: _check(spec, frame))
            check_derived(spec, frame)
        except NoMatch as err:
            d = err.diagnostics[0]
            found.append(Diagnostic(d.code, f"{name}: {d.message}", spec.data.span, d.hint)
                         if whole else
                         Diagnostic("W007", f"{name}: {d.message} (in its first "
                                    f"{len(next(iter(frame.values()))):,} rows)",
                                    spec.data.span, d.hint, severity="warning"))
        except DataError as err:
            d = err.diagnostics[0]
            found.append(Diagnostic(d.code, d.message, spec.data.span, d.hint))
    return found


def _check(spec: Spec, frame: Frame) -> None:
    from .labels import encode_labels
    from .values import dense_matrix

    encode_labels(spec, frame)
    for f in spec.features:
        if f.kind == "dense":
            dense_matrix(frame, f.columns, f.name, f.params.norm, f.params.missing)


def _fits_without_draw(spec: Spec) -> bool:
    """Whether a generated source's declared columns (`columns()` of its parameter model)
    already pass everything `_check` would check on a draw: each task's label holds values
    its kind accepts, each `where=` is 0/1, each dense column is a number (non-negative
    under norm=log). Conservative: a derived label (whether it matches any row is only seen
    on rows) or a use it cannot vouch for means a draw, whose messages are training's."""
    p = spec.data.params
    if not isinstance(p, reg.SyntheticSource) or spec.derived_labels:
        return False
    held = p.columns()
    tasks = all(_accepts(t.kind, t.params, held.get(t.label.name)) for t in spec.tasks)
    wheres = all(_accepts("binary", None, held.get(t.where.name))
                 for t in spec.tasks if t.where is not None)
    dense = all(_dense_fits(held.get(c), f.params.norm)
                for f in spec.features if f.kind == "dense" for c in f.columns)
    return tasks and wheres and dense


def _accepts(kind: str, params: reg.Params | None, values: reg.Values | None) -> bool:
    """Whether every value a generated column can hold is a valid label of a task kind."""
    if values is None or values.kind == "text":
        return False
    if kind == "regression":
        return True
    two = values.kind == "binary" or (values.kind == "classes" and values.classes == 2)
    if kind == "binary":
        return two
    if kind == "multiclass" and isinstance(params, reg.MulticlassTask):
        return two or (values.kind == "classes" and values.classes <= params.classes)
    return False


def _dense_fits(values: reg.Values | None, norm: str) -> bool:
    if values is None or values.kind == "text":
        return False
    return norm != "log" or values.kind != "real"


def with_sample(checked: Checked) -> Checked:
    """The checked spec with what its data's first rows say (only when the spec itself is
    fine: a sample of a spec with errors would only repeat them)."""
    if not checked.ok or checked.spec.data is None:
        return checked
    found = sorted([*checked.diagnostics, *check_sample(checked.spec)],
                   key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
    return replace(checked, diagnostics=found)


def collision_lines(spec: Spec, rows: int = SAMPLE_ROWS) -> list[str]:
    """Each hashed table's collisions on the first rows of the training data (`mtl check`):
    the distinct values the features reading it hold there, and how many share a bucket."""
    hashed = {f.name for f in spec.features if f.embedded and f.params.hash is not None}
    if not hashed or spec.data is None:
        return []
    from .codecs import Plan
    from .statistics import Statistics, collision_line, collisions

    plan = Plan.from_spec(spec)
    try:  # a sample training would refuse is check_sample's to report
        frame, _ = next(iter(sample_frames(spec, rows).values()))
        stats = Statistics(plan)
        stats.add(frame)
    except DataError:
        return []
    n = len(next(iter(frame.values()), []))
    return [collision_line(t.name, collisions(stats.counts.get(t.name, {}), None, t.rows),
                           f"first {n:,} rows") for t in plan.tables if t.name in hashed]
