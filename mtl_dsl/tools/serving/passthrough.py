"""What `mtl predict` copies from its input besides the model's columns, without torch
(`predict --model x.onnx` never imports it): the `--keep` id columns, and the spec's
`join=` tables resolved against the spec's folder (the data file is elsewhere)."""

from __future__ import annotations

from pathlib import Path

from ...data.sources import read_file, resolve_path, source_columns, table_frame
from ...data.values import Frame, check_columns
from ...language import registry as reg
from ...language.diagnostics import DataError
from ...language.ir import Setting


def joins_from(setting: Setting, base_dir: Path) -> Setting:
    """The setting with its join tables' paths made absolute (the data file is not in the
    spec's folder, the side tables are)."""
    p = setting.params
    if not isinstance(p, reg.FileSource) or not p.join:
        return setting
    tables = tuple(j.model_copy(update={"path": str(resolve_path(j.path, base_dir))})
                   for j in p.join)
    return setting.model_copy(update={"params": p.model_copy(update={"join": tables})})


def clash(keep: tuple[str, ...], outputs: list[str]) -> None:
    """A --keep column named like a prediction column would be overwritten: refused."""
    same = [c for c in keep if c in outputs]
    if same:
        raise DataError(f"--keep {same[0]}: the predictions have a column of that name",
                        hint=f"prediction columns: {', '.join(outputs)}")


def kept(setting: Setting, keep: tuple[str, ...], outputs: list[str]) -> Frame:
    """`--keep` columns of the data file (ids to join the predictions back on), read as
    they are, for `predict --model` (the compiled model's path reads them with its
    features); a name that is also an output column is refused."""
    if not keep:
        return {}
    clash(keep, outputs)
    check_columns({c: "--keep" for c in keep}, source_columns(setting, Path.cwd()))
    return table_frame(read_file(setting, Path.cwd(), setting.params.path, list(keep)), list(keep))
