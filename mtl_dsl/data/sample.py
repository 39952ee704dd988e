"""`mtl check`'s look at the data: the first rows of every file the spec reads, checked as
training would check them (labels that are not what their task needs, dense columns that are
not numbers or not finite, derived labels that match no rows), with the same messages, in time
bounded by the sample rather than the file."""

from __future__ import annotations

from dataclasses import replace

from ..language.check import Checked
from ..language.diagnostics import DataError, Diagnostic
from ..language.ir import Spec
from .frames import needed_columns
from .labels import NoMatch, check_derived, encode_labels
from .sources import file_parts, read_file, table_frame
from .synthetic import SYNTHETIC
from .values import Frame, dense_matrix, in_file

SAMPLE_ROWS = 10_000  # rows read from each file: enough to meet most label values
SYNTHETIC_ROWS = 1_000  # generated data is valid by construction; a draw checks the labels


def sample_frames(spec: Spec, rows: int = SAMPLE_ROWS) -> dict[str, tuple[Frame, bool]]:
    """The first `rows` rows of each of the spec's files (a small synthetic draw), each with
    whether that is the whole file."""
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
    encode_labels(spec, frame)
    for f in spec.features:
        if f.kind == "dense":
            dense_matrix(frame, f.columns, f.name, f.params.norm, f.params.missing)


def with_sample(checked: Checked) -> Checked:
    """The checked spec with what its data's first rows say (only when the spec itself is
    fine: a sample of a spec with errors would only repeat them)."""
    if not checked.ok or checked.spec.data is None:
        return checked
    found = sorted([*checked.diagnostics, *check_sample(checked.spec)],
                   key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
    return replace(checked, diagnostics=found)
