"""The front end in one call: text -> syntax tree -> IR -> graph -> diagnostics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostic, MtlError, Source, errors
from .graph import TaskGraph
from .ir import Spec, build
from .parser import parse
from .overrides import with_data
from .validate import ColumnLookup, validate


@dataclass(frozen=True)
class Checked:
    """A spec with its graph and every diagnostic found (warnings included)."""

    spec: Spec
    graph: TaskGraph
    diagnostics: list[Diagnostic]
    source: Source

    @property
    def ok(self) -> bool:
        return not errors(self.diagnostics)

    def raise_for_errors(self) -> "Checked":
        if not self.ok:
            raise MtlError(errors(self.diagnostics), self.source)
        return self


def check_text(text: str, name: str = "<spec>", path: str | None = None,
               data: str | None = None, columns: ColumnLookup | None = None) -> Checked:
    """Parse, build and validate; syntax errors raise, everything else is collected.
    `columns` reads a data source's header so that missing columns are reported at the spec
    line naming them; the data stage supplies it (see `mtl_dsl.api.check_file`)."""
    source = Source(text, name)
    statements = parse(source)
    spec, diagnostics = build(statements, text, path)
    spec = with_data(spec, data)
    graph = TaskGraph(spec)
    found = sorted(diagnostics + validate(spec, graph, columns),
                   key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
    return Checked(spec, graph, found, source)


def check_file(path: str | Path, data: str | None = None, columns: ColumnLookup | None = None
               ) -> Checked:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MtlError([Diagnostic("E001", f"{path} is not UTF-8 text (byte {err.start})",
                                   hint="a spec is a text file; save it as UTF-8")]) from None
    except OSError as err:
        raise FileNotFoundError(f"cannot read spec {path}: {err.strerror}") from None
    return check_text(text, str(path), str(path), data, columns)

