"""The model diagram as a Mermaid flowchart (`mtl render -o model.mmd`), for Markdown pages
that render Mermaid (GitHub, GitLab, MkDocs): the same nodes and edges as the Graphviz
diagram (tools/drawing/graphviz.py), drawn bottom to top, shared nodes grey, a node only one task
depends on in that task's colour. Text only: no Graphviz, no torch.

graphviz.py picks this module by the output's suffix and passes its fill per node, so the
two diagrams agree and this module imports nothing of graphviz.py's Graphviz. A search
space's values (tools/drawing/searched.py) are lines under their blocks' names, and a note
node holds its summary and what sits on no block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .searched import Searched

if TYPE_CHECKING:
    from ...language.graph import TaskGraph
    from ...language.ir import Spec

# Mermaid arrows per edge role (graphviz.py's EDGE_STYLES in Mermaid's vocabulary): dotted
# for what a gate reads or mixes, thick for what feeds a task, labelled transfers.
ARROWS = {"lookup": "---", "gate-input": "-.->", "mix": "-.->", "tower": "==>",
          "product": "==>|product|", "ait": "==>|AIT|", "calibrate": "-.->|calibrate|",
          "weights": "-.->|critic|"}
SHAPES = {"task": ('(["', '"])'), "gate": ('[/"', '"\\]'), "embedding": ('[("', '")]'),
          "expert": ('[["', '"]]')}


def node_ids(spec: Spec, graph: TaskGraph) -> dict[str, str]:
    """Each graph node's Mermaid id (`n0`, `n1`, ...: names like `emb:user` are not ids)."""
    return {name: f"n{i}" for i, name in enumerate(_order(spec, graph))}


def to_mermaid(spec: Spec, graph: TaskGraph, fill: Callable[[str], str],
               marks: Searched = Searched()) -> str:
    """The flowchart text: one line per node, one per edge, a class per fill colour
    (`fill(name)`: the Graphviz diagram's fill of that node); `marks`: a search space's."""
    ids = node_ids(spec, graph)
    lines = ["---", f"title: {_text(spec.name)}", "---", "flowchart BT"]
    for name, nid in ids.items():
        kind = graph.kind(name) or "node"
        left, right = SHAPES.get(kind, ('["', '"]'))
        searched = "".join(f"<br/><small>{_text(m.text())}</small>" for m in marks.of(name))
        lines.append(f"    {nid}{left}{_text(name)}<br/><small>{kind}</small>{searched}{right}")
    if marks.summary:  # the space: its summary and what sits on no block, in a note node
        note = "<br/>".join(_text(t) for t in (marks.summary, *marks.elsewhere))
        lines += [f'    space["{note}"]', "    style space fill:#f3eef8,stroke:#6a3d9a"]
    for u, v, role in graph.g.edges(data="role"):
        width = graph.widths.get(u)
        arrow = ARROWS.get(role, "-->")
        if arrow == "-->" and width:
            arrow = f"-->|{width}|"
        lines.append(f"    {ids[u]} {arrow} {ids[v]}")
    members: dict[str, list[str]] = {}
    for name, nid in ids.items():
        members.setdefault(fill(name), []).append(nid)
    for i, (colour, nodes) in enumerate(members.items()):
        lines.append(f"    classDef fill{i} fill:{colour},stroke:#888")
        lines.append(f"    class {','.join(nodes)} fill{i}")
    return "\n".join(lines) + "\n"


def _order(spec: Spec, graph: TaskGraph) -> list[str]:
    """Declared order (tables first), then any node the graph added."""
    declared = [n.name for n in (*spec.features, *spec.inputs, *spec.experts, *spec.gates,
                                 *spec.towers, *spec.critics, *spec.tasks)]
    tables = [n for n in graph.g if graph.kind(n) == "embedding"]
    first = [n for n in (*tables, *declared) if n in graph.g]
    return list(dict.fromkeys([*first, *graph.g]))


def _text(text: str) -> str:
    """Text inside a Mermaid label: quotes and angle brackets as entities."""
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
