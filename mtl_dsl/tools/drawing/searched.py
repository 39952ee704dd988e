"""A search space on the diagram (docs/tuning.md, docs/cli.md "mtl render").

A spec holding `choice(...)`, `uniform(...)`, ... is many models; `mtl render` draws one of
them, the spec at each dimension's first candidate (the one `mtl check` validates), and
shows every searched value where it is written, so the drawing is the space's architecture:
an expert count as `e ×{4, 8, 12}`, a width inside its MLP's line (`mlp 499→{32, 64, 128}`),
any other parameter as a line under its block (`dropout ∈ [0, 0.3]`); what sits on no block
(train settings, the weighting, a template's arguments) goes into the title. `[a, b]` is a
uniform range, `[a, b] log` a log-uniform one, `[a, b] int` an integer one; `as emb_dim`
names the `name=` that ties several places into one dimension. Text only: no Graphviz, no
torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...language import registry as reg
from ...language.space import Dimension, Place, Space, number_text
from .labels import width_in

if TYPE_CHECKING:
    from ...language.graph import TaskGraph

# statements that declare one node of the graph, named as the statement is
NODE_STATEMENTS = ("feature", "input", "experts", "gate", "tower", "task")
ARGUMENT = re.compile(r"^: (?P<kind>[\w.]+)\((?P<arg>#\d+|\w+)\)$")  # a direct argument


@dataclass(frozen=True)
class Mark:
    """One searched value on one block: what it sets (`count`, `width 2`, `dropout`), the
    values it takes, the `name=` tying it to other places, and for an MLP width its index
    among the widths (drawn inside the MLP's line)."""

    key: str
    values: str
    tie: str | None = None
    width: int | None = None

    def text(self) -> str:
        return f"{self.key} ∈ {self.values}" + (f" as {self.tie}" if self.tie else "")


@dataclass(frozen=True)
class Searched:
    """Every dimension placed: the marks of each block, and the lines for the title (what
    sits on no block, written as the dimension's place: `train lr ∈ [0.0003, 0.01] log`)."""

    nodes: dict[str, tuple[Mark, ...]] = field(default_factory=dict)
    elsewhere: tuple[str, ...] = ()
    summary: str = ""

    def of(self, name: str) -> tuple[Mark, ...]:
        return self.nodes.get(name, ())


def values_text(d: Dimension) -> str:
    """A dimension's values as the diagram writes them: `{a, b}`, `[a, b]`, `[a, b] log`."""
    if d.kind == "choice":
        return "{" + ", ".join(d.options) + "}"
    bounds = f"[{number_text(d.low)}, {number_text(d.high)}]"
    return bounds + {"uniform": "", "loguniform": " log", "int_uniform": " int"}[d.kind]


def searched(space: Space, graph: TaskGraph) -> Searched:
    """Where each dimension of `space` shows on the diagram of `graph` (its first
    candidates' graph)."""
    nodes: dict[str, list[Mark]] = {}
    elsewhere: list[str] = []
    for d in space.dims:
        tie = d.name if any(p.where != d.name for p in d.places) else None
        for place in d.places:
            if place.keyword in NODE_STATEMENTS and place.name in graph.g:
                mark = _mark(place, graph, values_text(d), tie)
                nodes.setdefault(place.name, []).append(mark)
            else:
                line = f"{place.where} ∈ {values_text(d)}" + (f" as {tie}" if tie else "")
                elsewhere.append(line)
    return Searched({n: tuple(m) for n, m in nodes.items()}, tuple(dict.fromkeys(elsewhere)),
                    _summary(space))


def _summary(space: Space) -> str:
    size = space.size()
    n = len(space.dims)
    return (f"search space: {n} dimension{'s' * (n != 1)}, "
            f"{'continuous' if size is None else f'{size:,} specs'}; "
            "drawn at each dimension's first candidate")


def _mark(place: Place, graph: TaskGraph, values: str, tie: str | None) -> Mark:
    """What a place sets on its block: the count, a positional slot (by the kind's
    registry entry: an MLP's widths), a named parameter, or the path as written."""
    if place.path == "[count]":
        return Mark("count", values, tie)
    if not place.path:
        return Mark("call", values, tie)  # the whole call searched: `choice(mlp(..), ..)`
    found = ARGUMENT.match(place.path)
    if found is None:  # inside a nested call or a list: the path says where
        return Mark(place.path.removeprefix(": "), values, tie)
    arg = found["arg"]
    if not arg.startswith("#"):
        return Mark(arg, values, tie)
    return _positional(found["kind"], int(arg[1:]), graph.g.nodes[place.name]["node"], values,
                       tie)


def _positional(kind: str, number: int, node, values: str, tie: str | None) -> Mark:
    """The `number`th positional argument of a `kind(...)` call, named by its registry slot;
    the widths of an MLP are numbered when there are several."""
    slots = next((k.positional for role in reg.REGISTRY.values() for name, k in role.items()
                  if name == kind and k.positional), ())
    star = next((i for i, s in enumerate(slots) if s.startswith("*")), None)
    if star is None or number - 1 < star:
        key = slots[number - 1] if number <= len(slots) else f"argument {number}"
        return Mark(key, values, tie)
    slot, index = slots[star][1:], number - 1 - star
    net = getattr(node, "net", None)
    if slot == "widths" and net is not None:
        key = "width" if len(net.widths) == 1 else f"width {index + 1}"
        return Mark(key, values, tie, width=index)
    return Mark(f"{slot} {index + 1}", values, tie)


def with_marks(count: int, lines: list[str], marks: tuple[Mark, ...]
               ) -> tuple[str, list[str], list[str]]:
    """A block's marks applied to its description: (what follows its name, `×8` or
    `×{4, 8}`; its lines, an MLP's searched widths written in; the other marks' lines)."""
    times, lines, rest = (f" ×{count}" if count > 1 else ""), list(lines), []
    for m in marks:
        if m.key == "count":
            times = f" ×{m.values}"
        elif m.width is not None and lines:
            lines[0] = width_in(lines[0], m.width, m.values)
        else:
            rest.append(m.text())
            continue
        if m.tie:
            rest.append(f"{m.key} searched as {m.tie}")
    return times, lines, rest
