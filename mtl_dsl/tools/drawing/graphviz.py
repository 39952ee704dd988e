"""The model diagram: the task graph drawn with Graphviz, without importing torch.

Like micrograd's ``draw_dot``, this only turns nodes and edges into a
``graphviz.Digraph``. Data flows bottom to top: features at the bottom, tasks at
the top. What is shared comes from the graph (``TaskGraph.is_shared``): shared
nodes are grey and say which tasks share them; a node that only one task depends
on is filled with that task's colour. Expert groups are one node each
("e ×8 / mlp 100→16"); the groups and gates a template (PLE/CGC) generated sit in
one cluster per level. Dashed edges carry experts' outputs into a gate. A spec holding a
search space is drawn at its first candidates with every searched value shown where it
applies (tools/drawing/searched.py).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import graphviz

from .labels import DESCRIBE, count_of, counterfactual_label, shared_note
from .searched import Searched, searched, with_marks

if TYPE_CHECKING:  # the renderer needs only attribute access; keep imports light
    from ...language.graph import TaskGraph
    from ...language.ir import Spec
    from ...language.space import Space

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None}
MERMAID = ".mmd"  # a Mermaid flowchart (tools/drawing/mermaid.py), not drawn by Graphviz
INSTALL_HINT = ("install Graphviz (apt-get install graphviz, brew install graphviz, "
                "or conda install graphviz)")

FONT = "Helvetica"
SHARED_FILL = "#e3e3e3"
UNUSED_FILL = "#ffffff"
# ColorBrewer Set2/Pastel: light enough for black text, distinct from the grey.
PALETTE = ("#8ecae6", "#ffb703", "#95d5b2", "#f4a3a8", "#cdb4db", "#f6bd60", "#a3c4f3",
           "#d4e09b", "#f7cad0", "#b5e48c")
EDGE = "#444444"
SEARCHED = "#6a3d9a"  # the searched values of a space (`dropout ∈ [0, 0.3]`)

SHAPES = {"feature": "box", "embedding": "cylinder", "input": "box", "expert": "box3d",
          "gate": "trapezium", "tower": "box", "critics": "box", "critic_use": "box",
          "task": "ellipse"}
STYLES = {"feature": "filled", "embedding": "filled", "input": "filled,rounded",
          "expert": "filled", "gate": "filled", "tower": "filled,rounded",
          "critics": "filled,rounded", "critic_use": "filled,rounded", "task": "filled"}
EDGE_STYLES = {  # role -> edge attributes
    "lookup": dict(style="solid", color="#888888", arrowhead="none"),
    "concat": dict(style="solid", color=EDGE),
    "input": dict(style="solid", color=EDGE),
    "gate-input": dict(style="dotted", color="#999999", arrowsize="0.6"),
    "mix": dict(style="dashed", color="#555555", arrowsize="0.7"),
    "tower": dict(style="bold", color=EDGE),
    # transfers between tasks, each in its own colour and named on the edge
    "product": dict(style="bold", color="#1f5fa8", fontcolor="#1f5fa8", label=" product"),
    "ait": dict(style="bold", color="#b3261e", fontcolor="#b3261e", penwidth="2",
                label=" AIT"),
    "calibrate": dict(style="dashed", color="#7b3fa0", fontcolor="#7b3fa0",
                      label=" calibrate"),
    "query": dict(style="dotted", color="#555555", fontcolor="#555555", label=" query"),
    "counterfactual": dict(style="dashed", color="#b35c00", fontcolor="#b35c00", penwidth="2",
                           label=" counterfactual"),  # ESCM²; the label names the mode
    "weights": dict(style="dashed", color="#2e7d32", fontcolor="#2e7d32", label=" critic",
                    arrowsize="0.6"),
}
LABELLED_ROLES = ("concat", "input", "tower")  # edges that show the width they carry
PARAMETRISED = ("embedding", "expert", "gate", "tower", "critics")


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render` wrote: the file, whether it fell back to DOT, and a line to print."""

    path: Path
    fallback: bool
    message: str


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

def to_digraph(spec: Spec, graph: TaskGraph, space: Space | None = None) -> graphviz.Digraph:
    """The diagram of a spec without errors, as a ``graphviz.Digraph`` (nothing is written);
    with the `space` the spec is the first candidates of, its searched values on it."""
    colours = task_colours(spec)
    marks = searched(space, graph) if space else Searched()
    dot = graphviz.Digraph(spec.name)
    dot.attr(rankdir="BT", newrank="true", nodesep="0.3", ranksep="0.45", fontname=FONT,
             labelloc="t", labeljust="c",
             label=f"<{_title(spec, colours, set(nx_roles(graph)), marks)}>")
    dot.attr("node", fontname=FONT, fontsize="11", penwidth="1.2", margin="0.12,0.06")
    dot.attr("edge", fontname=FONT, fontsize="9", fontcolor="#555555")
    groups = _groups(spec)
    clusters = {g: _cluster(g) for g in dict.fromkeys(groups.values())}
    order = draw_order(spec, graph)
    for name in order:
        group = groups.get(name)
        attrs = node_attrs(spec, graph, name, colours, in_cluster=group is not None,
                           marks=marks)
        (clusters[group] if group else dot).node(node_id(name), **attrs)
    for sub in clusters.values():
        dot.subgraph(sub)
    _same_rank(dot, [t.name for t in spec.tasks if t.name in graph.g and not any(
        graph.kind(u) == "task" for u in graph.g.predecessors(t.name))])
    rank = {n: i for i, n in enumerate(order)}
    edges = sorted(graph.g.edges(data="role"), key=lambda e: (rank[e[1]], rank[e[0]]))
    for u, v, role in edges:
        if role == "gate-input" and _reads_no_input(graph, v):
            continue  # cross-stitch's constants read no input: the edge only orders the plan
        dot.edge(node_id(u), node_id(v), **edge_attrs(graph, u, role))
    return dot


def render(spec: Spec, graph: TaskGraph, out: Path, space: Space | None = None
           ) -> RenderResult:
    """Write the diagram to `out`; the format follows its suffix (.svg, .png, .pdf, .dot,
    .mmd). `space`: the search space `spec` is the first candidates of (drawn on it).

    Without Graphviz's `dot` program, an image cannot be drawn: the DOT source is
    written next to `out` (same stem, `.dot`) and the message says how to install it.
    Nothing but `out` (or that `.dot` file) is ever written.
    """
    out = Path(out)
    if out.suffix.lower() == MERMAID:  # a Mermaid flowchart for Markdown (tools/drawing/mermaid.py)
        from .mermaid import to_mermaid

        colours = task_colours(spec)
        marks = searched(space, graph) if space else Searched()
        out.write_text(to_mermaid(spec, graph, lambda n: fill_of(graph, n, colours), marks))
        return RenderResult(out, False, f"wrote {out}")
    fmt = output_format(out)
    dot = to_digraph(spec, graph, space)
    if fmt is None:
        out.write_text(dot.source)
        return RenderResult(out, False, f"wrote {out}")
    if shutil.which("dot") is None:
        return _fallback(dot, out, fmt)
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        return _fallback(dot, out, fmt)
    out.write_bytes(data)
    return RenderResult(out, False, f"wrote {out}")


def output_format(out: Path) -> str | None:
    """The Graphviz format for a path's suffix (None: DOT source); unknown suffixes raise."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot draw a diagram as '{suffix or out.name}': "
                         f"use one of {', '.join([*FORMATS, MERMAID])}")
    return FORMATS[suffix]


def _fallback(dot: graphviz.Digraph, out: Path, fmt: str) -> RenderResult:
    source = out.with_suffix(".dot")
    source.write_text(dot.source)
    message = (f"Graphviz's `dot` program was not found, so {out} was not drawn; "
               f"wrote the DOT source to {source} instead. To draw it, {INSTALL_HINT}, "
               f"then run again or `dot -T{fmt} {source} -o {out}`")
    return RenderResult(source, True, message)


# --------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------

def nx_roles(graph: TaskGraph) -> list[str]:
    return [role for _, _, role in graph.g.edges(data="role")]


def draw_order(spec: Spec, graph: TaskGraph) -> list[str]:
    """Nodes in the order they were declared (dot keeps it where it can), tables first."""
    declared = [n.name for n in (*spec.features, *spec.inputs, *spec.experts, *spec.gates,
                                 *spec.towers, *spec.critics, *spec.tasks)]
    tables = [n for n in graph.g if graph.kind(n) == "embedding"]
    rest = [n for n in graph.g if n not in set(declared) | set(tables)]
    return [n for n in (*tables, *declared) if n in graph.g] + rest


def node_id(name: str) -> str:
    """A DOT id: `emb:u` would read as node `emb`, port `u`; user names never hold '/'."""
    return name.replace(":", "/")


def task_colours(spec: Spec) -> dict[str, str]:
    return {t.name: PALETTE[i % len(PALETTE)] for i, t in enumerate(spec.tasks)}


def fill_of(graph: TaskGraph, name: str, colours: dict[str, str]) -> str:
    """Grey when shared, the task's colour when one task owns it, white when unused; a task
    node always has its own colour."""
    if graph.kind(name) == "task":
        return colours.get(name, SHARED_FILL)
    tasks = graph.tasks_of.get(name, frozenset())
    if len(tasks) >= 2:
        return SHARED_FILL
    if len(tasks) == 1:
        return colours.get(next(iter(tasks)), SHARED_FILL)
    return UNUSED_FILL


def node_attrs(spec: Spec, graph: TaskGraph, name: str, colours: dict[str, str],
               in_cluster: bool = False, marks: Searched = Searched()) -> dict[str, str]:
    kind = graph.kind(name)
    node = graph.g.nodes[name]["node"]
    title, lines = DESCRIBE[kind](spec, graph, name, in_cluster)
    times, lines, searched_lines = with_marks(count_of(graph, name), lines, marks.of(name))
    tasks = graph.tasks_of.get(name, frozenset())
    note = None
    if kind in PARAMETRISED and len(tasks) >= 2:
        note = shared_note(spec, tasks)
    elif kind == "task" and not node.has_loss:
        note = "no loss of its own"
    elif not tasks:
        note = "unused: no task reads it"
    attrs = dict(shape=SHAPES[kind], style=STYLES[kind],
                 fillcolor=fill_of(graph, name, colours), tooltip=f"{kind} {name}",
                 label=f"<{_html_label(title, lines, note, times, searched_lines)}>")
    if kind == "task":
        attrs.update(peripheries="2", penwidth="1.6")
    if kind == "gate":
        attrs.update(_funnel_size(title, [*lines, *searched_lines], note))
    if not tasks or (kind == "task" and not node.has_loss):
        attrs["style"] += ",dashed"
    return attrs


def _funnel_size(title: str, lines: list[str], note: str | None) -> dict[str, str]:
    """Graphviz pads a trapezium to twice its label's size; size it from the text instead."""
    texts = [f"{title}  ", *lines, *([note] if note else [])]
    width = 0.075 * max(len(t) for t in texts) + 0.75  # inches; ~11pt Helvetica
    height = 0.19 * len(texts) + 0.2
    return dict(fixedsize="shape", width=f"{width:.2f}", height=f"{height:.2f}")


def _html_label(title: str, lines: list[str], note: str | None, times: str = "",
                searched_lines: list[str] = ()) -> str:
    """One table row per line: `<br/>` lets an underscore touch the line below. `times`:
    what follows the name (`×8`); `searched_lines`: a space's values, in their colour."""
    rows = [f"<b>{escape(title)}</b>{escape(times)}"]
    rows += [f'<font point-size="10">{escape(line)}</font>' for line in lines]
    rows += [f'<font point-size="10" color="{SEARCHED}">{escape(line)}</font>'
             for line in searched_lines]
    if note:
        rows.append(f'<font point-size="9" color="#555555"><i>{escape(note)}</i></font>')
    cells = "".join(f"<tr><td>{row}</td></tr>" for row in rows)
    return f'<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{cells}</table>'


# --------------------------------------------------------------------------
# Clusters, ranks, edges, title
# --------------------------------------------------------------------------

LEVEL = re.compile(r"^(?P<stem>.+)\.l(?P<level>\d+)$")


def _groups(spec: Spec) -> dict[str, str]:
    """Template-generated node -> its group (one template level, e.g. `p.l1`)."""
    return {n.name: n.group for n in (*spec.experts, *spec.gates, *spec.critics) if n.group}


def _cluster(group: str) -> graphviz.Digraph:
    m = LEVEL.match(group)
    label = f"{m['stem']} · level {m['level']}" if m else f"{group} · MetaHeac"
    sub = graphviz.Digraph(name=f"cluster_{group}")
    sub.attr(label=label, style="rounded,dashed", color="#999999", fontname=FONT,
             fontsize="11", fontcolor="#333333", labeljust="l", margin="10")
    return sub


def _same_rank(dot: graphviz.Digraph, names: list[str]) -> None:
    if len(names) > 1:
        with dot.subgraph() as same:
            same.attr(rank="same")
            for n in names:
                same.node(node_id(n))
            for u, v in zip(names, names[1:]):  # keep the tasks in declaration order
                same.edge(node_id(u), node_id(v), style="invis")


def _reads_no_input(graph: TaskGraph, target: str) -> bool:
    """Whether a `gate-input` edge goes to a cross-stitch gate, which reads no input. Not
    every such edge ends at a gate: a PEPNet tower's prior (`by=`) feeds the tower's own
    gate units through one, and a tower has no gate form to ask about."""
    return graph.kind(target) == "gate" and graph.form(target) == "stitch"


def edge_attrs(graph: TaskGraph, source: str, role: str) -> dict[str, str]:
    attrs = dict(EDGE_STYLES.get(role, {}))
    width = graph.widths.get(source)
    if role in LABELLED_ROLES and width:
        attrs["label"] = f" {width}"
    if role == "counterfactual":
        attrs["label"] = counterfactual_label(graph, source)
    return attrs


TRANSFER_LEGEND = {"product": "blue: product", "ait": "red: AIT transfer",
                   "calibrate": "purple: calibration",
                   "counterfactual": "orange: counterfactual risk (ESCM²)",
                   "weights": "green: shared critics"}


def _edge_legend(roles: set[str]) -> str:
    """What the edge styles mean; transfer colours only when the model has them."""
    parts = ["solid: data", "dashed: experts mixed by a gate", "dotted: a gate's input"]
    parts += [text for role, text in TRANSFER_LEGEND.items() if role in roles]
    return " · ".join(parts)


def _title(spec: Spec, colours: dict[str, str], roles: set[str], marks: Searched = Searched()
           ) -> str:
    """The model's name and description over a legend of fills and edge styles, and a
    space's summary and the searched values that sit on no block."""
    rows = [f'<tr><td colspan="{len(colours) + 1}"><font point-size="16"><b>'
            f"{escape(spec.name)}</b></font></td></tr>"]
    if spec.description:
        rows.append(f'<tr><td colspan="{len(colours) + 1}"><font point-size="11">'
                    f"{escape(spec.description)}</font></td></tr>")
    swatch = '<td bgcolor="{}" border="1" color="#888888"><font point-size="10">{}</font></td>'
    cells = [swatch.format(SHARED_FILL, "shared")]
    cells += [swatch.format(c, f"task {escape(t)}") for t, c in colours.items()]
    rows.append(f"<tr>{''.join(cells)}</tr>")
    rows.append(f'<tr><td colspan="{len(colours) + 1}"><font point-size="9" color="#555555">'
                + _edge_legend(roles) + "</font></td></tr>")
    for line in (marks.summary, *marks.elsewhere) if marks.summary else ():
        rows.append(f'<tr><td colspan="{len(colours) + 1}"><font point-size="10" '
                    f'color="{SEARCHED}">{escape(line)}</font></td></tr>')
    return ('<table border="0" cellborder="0" cellspacing="4" cellpadding="3">'
            + "".join(rows) + "</table>")
