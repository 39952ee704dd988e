"""The front end in one call: text -> syntax tree -> IR -> overrides -> graph -> diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import registry as reg
from .builder import build
from .diagnostics import Diagnostic, MtlError, Source, errors, spec_errors, summarise
from .graph import TaskGraph
from .ir import Spec
from .parser import parse
from .overrides import apply
from .size import Size, check_size
from .space import Space, find_space, substitute, validate_space
from .validation import ColumnLookup, validate


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
    size: Size | None = None  # None while the spec has errors (language/size.py)
    max_params: int = reg.MAX_PARAMS
    space: Space = Space()  # a search space: the spec is its first candidates (space.py)

    @property
    def ok(self) -> bool:
        return not errors(self.diagnostics)

    def raise_for_errors(self) -> "Checked":
        if not self.ok:
            raise MtlError(errors(self.diagnostics), self.source)
        if self.space:  # one spec is trained, not a space of them
            raise MtlError([Diagnostic(
                "E720", f"the spec holds a search space ({len(self.space.dims)} dimensions); "
                "search it with `mtl tune`", self.space.dims[0].spans[0],
                "or write one value in place of each choice()/uniform()")], self.source)
        return self

    def override(self, data: str | None = None, weighting: str | None = None,
                 columns: ColumnLookup | None = None) -> "Checked":
        """This spec with `--data` / `--weighting` applied (language/overrides.py), validated
        again: a method may not suit the spec (too few tasks, nothing shared)."""
        if data is None and weighting is None:
            return self
        return replace(check_spec(apply(self.spec, data, weighting), self.source, columns,
                                  self.built, self.max_params), space=self.space)


def _position(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.column) if d.span else (0, 0)


def check_spec(spec: Spec, source: Source, columns: ColumnLookup | None = None,
               built: tuple[Diagnostic, ...] | list[Diagnostic] = (),
               max_params: int = reg.MAX_PARAMS) -> Checked:
    """Validate a built spec; `built`: what building it reported already. A spec without
    errors of its own is sized (parameters, training memory) and refused over `max_params`
    (E419); warnings beyond a few of one code are summarised."""
    graph = TaskGraph(spec)
    found = [*built, *validate(spec, graph, columns)]
    size = None
    if not spec_errors(found):
        size, too_big = check_size(spec, graph, max_params)
        found += too_big
    return Checked(spec, graph, summarise(sorted(found, key=_position)), source, tuple(built),
                   size, max_params)


def check_text(text: str, name: str = "<spec>", path: str | None = None,
               data: str | None = None, columns: ColumnLookup | None = None,
               weighting: str | None = None, max_params: int = reg.MAX_PARAMS) -> Checked:
    """Parse, build, apply the overrides and validate; syntax errors (and a bad override)
    raise, everything else is collected. `columns` reads a data source's header so that
    missing columns are reported at the spec line naming them; the data stage supplies it
    (see `mtl_dsl.api.check_file`)."""
    source = Source(text, name)
    statements = parse(source)
    space, problems = find_space(statements, text)
    if problems:
        raise MtlError(problems, source)
    if space:  # every candidate checked; the spec is the one of the first candidates
        seen: dict[str, Checked] = {}

        def check(one: str) -> list[Diagnostic]:
            if one not in seen:
                seen[one] = check_text(one, name, path, data, columns, weighting, max_params)
            return seen[one].diagnostics

        found = validate_space(text, space, check)
        first = seen[substitute(text, space, space.first(), pad=True)]
        return replace(first, diagnostics=sorted(found, key=_position), source=source,
                       space=space)
    spec, built = build(statements, text, path)
    return check_spec(apply(spec, data, weighting), source, columns, built, max_params)


def check_file(path: str | Path, data: str | None = None, columns: ColumnLookup | None = None,
               weighting: str | None = None, max_params: int = reg.MAX_PARAMS) -> Checked:
    """As check_text, reading UTF-8 (a byte-order mark is skipped, as editors do)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise MtlError([Diagnostic("E001", f"{path} is not UTF-8 text (byte {err.start})",
                                   hint="a spec is a text file; save it as UTF-8")]) from None
    except OSError as err:
        raise FileNotFoundError(f"cannot read spec {path}: {err.strerror}") from None
    return check_text(text, str(path), str(path), data, columns, weighting, max_params)
