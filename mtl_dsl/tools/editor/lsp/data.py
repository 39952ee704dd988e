"""The data side of the server's diagnostics: the source's header columns and `mtl check`'s look
at its first rows, read off the editor's path (a worker thread), cached while the files and the
`data` statement stay the same.

`mtl check` reads the columns through `mtl_dsl.data.sources.source_columns` and checks the first
rows with `mtl_dsl.data.sample.with_sample`; so does this module, so the diagnostics a spec gets
in the editor are the command's (docs/editors.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ....language.check import Checked
from ....language.diagnostics import DataError, Diagnostic
from ....language.ir import Setting, Spec

# The codes only a read of the data can give (the header's columns, the first rows).
READ_CODES = frozenset({"E502", "E503", "E504", "E505", "E506", "E701", "W007"})


@dataclass(frozen=True)
class Header:
    """A source's columns, or the error reading them raised (as `source_columns` raises it)."""

    columns: tuple[str, ...] = ()
    error: DataError | None = None

    def lookup(self, setting: Setting, base_dir: Path) -> list[str]:
        """A `ColumnLookup` (validation/settings.py) answering from this header."""
        if self.error is not None:
            raise self.error
        return list(self.columns)


class DataCache:
    """Headers by source: a setting, the spec's folder and its files' modification times."""

    def __init__(self) -> None:
        self._headers: dict[tuple, Header] = {}

    def header(self, spec: Spec) -> Header:
        """The header of the spec's source, read now unless a read of the same files is kept."""
        from ....data.sources import source_columns

        key = (repr(spec.data), str(spec.base_dir), _stamps(spec))
        found = self._headers.get(key)
        if found is None:
            try:
                found = Header(tuple(source_columns(spec.data, spec.base_dir)))
            except DataError as err:
                found = Header(error=err)
            except OSError as err:
                found = Header(error=DataError(f"cannot read the data: {err}"))
            self._headers = {key: found}  # one source per document
        return found


def sampled(checked: Checked) -> list[Diagnostic]:
    """`mtl check`'s diagnostics with what the data's first rows say (data/sample.py)."""
    from ....data.sample import with_sample

    return with_sample(checked).diagnostics


def _stamps(spec: Spec) -> tuple:
    """The modification times of the files a source names (a file that is not there: None)."""
    params = spec.data.params
    names = [getattr(params, k, None) for k in ("path", "train", "val", "test")]
    names += [j.path for j in getattr(params, "join", ()) or ()]
    out = []
    for name in (n for n in names if isinstance(n, str)):
        try:
            out.append(os.stat(spec.base_dir / name).st_mtime_ns)
        except OSError:
            out.append(None)
    return tuple(out)
