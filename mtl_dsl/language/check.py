"""The front end in one call: text -> syntax tree -> IR -> overrides -> graph -> diagnostics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .builder import build
from .diagnostics import Diagnostic, MtlError, Source, errors
from .graph import TaskGraph
from .ir import Spec
from .parser import parse
from .overrides import apply
from .validate import ColumnLookup, validate


@dataclass(frozen=True)
class Checked:
    """A spec with its graph and every diagnostic found (warnings included). `built` keeps
    the IR builder's own diagnostics, so an overridden spec is validated again without
    re-reading its text."""

    spec: Spec
    graph: TaskGraph
    diagnostics: list[Diagnostic]
    source: Source
    built: tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return not errors(self.diagnostics)

    def raise_for_errors(self) -> "Checked":
        if not self.ok:
            raise MtlError(errors(self.diagnostics), self.source)
        return self

    def override(self, data: str | None = None, weighting: str | None = None,
                 columns: ColumnLookup | None = None) -> "Checked":
        """This spec with `--data` / `--weighting` applied (language/overrides.py), validated
        again: a method may not suit the spec (too few tasks, nothing shared)."""
        if data is None and weighting is None:
            return self
        return check_spec(apply(self.spec, data, weighting), self.source, columns, self.built)


def _position(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.column) if d.span else (0, 0)


def check_spec(spec: Spec, source: Source, columns: ColumnLookup | None = None,
               built: tuple[Diagnostic, ...] | list[Diagnostic] = ()) -> Checked:
    """Validate a built spec; `built`: what building it reported already."""
    graph = TaskGraph(spec)
    found = sorted([*built, *validate(spec, graph, columns)], key=_position)
    return Checked(spec, graph, found, source, tuple(built))


def check_text(text: str, name: str = "<spec>", path: str | None = None,
               data: str | None = None, columns: ColumnLookup | None = None,
               weighting: str | None = None) -> Checked:
    """Parse, build, apply the overrides and validate; syntax errors (and a bad override)
    raise, everything else is collected. `columns` reads a data source's header so that
    missing columns are reported at the spec line naming them; the data stage supplies it
    (see `mtl_dsl.api.check_file`)."""
    source = Source(text, name)
    spec, built = build(parse(source), text, path)
    return check_spec(apply(spec, data, weighting), source, columns, built)


def check_file(path: str | Path, data: str | None = None, columns: ColumnLookup | None = None,
               weighting: str | None = None) -> Checked:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MtlError([Diagnostic("E001", f"{path} is not UTF-8 text (byte {err.start})",
                                   hint="a spec is a text file; save it as UTF-8")]) from None
    except OSError as err:
        raise FileNotFoundError(f"cannot read spec {path}: {err.strerror}") from None
    return check_text(text, str(path), str(path), data, columns, weighting)
