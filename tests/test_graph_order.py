"""The task graph's order and sharing, held to a golden file (tests/graph_orders.json).

The compiler builds one block per node in the graph's order, so the order decides the
parameters' initialisation order: a changed order changes every seeded result. The golden
file holds, for every shipped spec and every bad fixture that gets as far as a graph (cyclic
ones included), the order, the shared and last-shared blocks and each node's tasks
(docs/internals.md, "The task graph"). `python tests/test_graph_order.py` rewrites it;
review the diff before committing it: a changed line is a changed model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mtl_dsl.language.check import check_file  # noqa: E402
from mtl_dsl.language.diagnostics import MtlError  # noqa: E402
from mtl_dsl.language.graph import TaskGraph  # noqa: E402

ROOT = HERE.parent
GOLDEN = HERE / "graph_orders.json"


def spec_paths() -> list[Path]:
    """Every shipped spec (search spaces included) and every bad fixture."""
    return sorted({*(ROOT / "specs").glob("**/*.mtl"), *(HERE / "bad").glob("*.mtl")})


def graph_of(path: Path) -> TaskGraph | None:
    """The spec's task graph; None for a fixture that stops before one (a syntax error)."""
    try:
        return check_file(path).graph
    except MtlError:
        return None


def snapshot(graph: TaskGraph) -> dict:
    """What the golden file records of one graph."""
    return {"acyclic": graph.acyclic, "order": list(graph.order), "shared": list(graph.shared),
            "last_shared": list(graph.last_shared),
            "tasks_of": {n: sorted(graph.tasks_of[n]) for n in graph.order}}


def snapshots() -> dict[str, dict]:
    """Path (relative to the repository) -> snapshot, for every spec that has a graph."""
    graphs = {str(p.relative_to(ROOT)): graph_of(p) for p in spec_paths()}
    return {name: snapshot(g) for name, g in graphs.items() if g is not None}


def write_golden() -> None:
    """One line per recorded field, so that a diff shows which graph changed and how."""
    lines = []
    for name, snap in snapshots().items():
        fields = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in snap.items())
        lines.append(f" {json.dumps(name)}: {{\n{fields}\n }}")
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")


GOLDEN_SNAPSHOTS: dict[str, dict] = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("name", sorted(GOLDEN_SNAPSHOTS))
def test_order_and_sharing_are_the_recorded_ones(name):
    graph = graph_of(ROOT / name)
    assert graph is not None, f"{name} no longer gets as far as a graph"
    assert snapshot(graph) == GOLDEN_SNAPSHOTS[name]


def test_the_golden_file_covers_every_spec_and_cyclic_graphs():
    recorded = set(GOLDEN_SNAPSHOTS)
    assert {str(p.relative_to(ROOT)) for p in spec_paths() if p.parent.name != "bad"} <= recorded
    assert any(not s["acyclic"] for s in GOLDEN_SNAPSHOTS.values())  # the cyclic path, too
    assert sum(s["acyclic"] for s in GOLDEN_SNAPSHOTS.values()) > 20


@pytest.mark.parametrize("path", spec_paths(), ids=lambda p: p.name)
def test_the_order_is_topological_and_holds_every_node_once(path):
    graph = graph_of(path)
    if graph is None:
        return  # a syntax error: no graph to order (test_validate checks its message)
    assert sorted(graph.order) == sorted(graph.g.nodes)
    rank = {n: i for i, n in enumerate(graph.order)}
    backwards = [(u, v) for u, v in graph.g.edges if rank[u] >= rank[v]]
    if graph.acyclic:
        assert backwards == []
    else:  # only edges inside a cycle may point back; the order still holds every node
        assert backwards and all(u in graph.reached({v}) for u, v in backwards)


def test_the_order_does_not_depend_on_the_hash_seed():
    """Sets of names iterate in a per-process order: the graph's order must not follow one."""
    code = ("import json, sys\nsys.path.insert(0, 'tests')\n"
            "from test_graph_order import snapshots\nprint(json.dumps(snapshots()))\n")
    seen = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        seen.append(json.loads(done.stdout))
    assert seen[0] == seen[1] == snapshots()


if __name__ == "__main__":
    write_golden()
    print("wrote", GOLDEN.relative_to(ROOT))
