"""language/graph.py's own Digraph: the same graph, order and answers as networkx's."""

from __future__ import annotations

import subprocess
import sys

import networkx as nx
import pytest

from conftest import BAD, ROOT, SPECS
from mtl_dsl.language.check import check_file
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.language.graph import Digraph


def graphs():
    """Every shipped spec and every bad fixture that gets as far as a graph (cyclic ones
    included); the parse-error fixtures have none."""
    out = []
    for path in SPECS + BAD:
        try:
            graph = check_file(path).graph
        except MtlError:
            continue
        if graph is not None:
            out.append(pytest.param(graph, id=path.name))
    return out


@pytest.mark.parametrize("graph", graphs())
def test_order_edges_and_reachability_are_networkx_s(graph):
    g = graph.nx
    assert list(g.nodes) == list(graph.g) and list(g.edges(data="role")) == \
        list(graph.g.edges(data="role"))
    assert graph.acyclic == nx.is_directed_acyclic_graph(g)
    assert len(graph.order) == len(g) and set(graph.order) == set(g.nodes)
    if graph.acyclic:
        assert graph.order == tuple(nx.topological_sort(g))
    for n in graph.g:
        assert list(graph.g.successors(n)) == list(g.successors(n))
        assert set(graph.g.predecessors(n)) == set(g.predecessors(n))
        assert graph.reached({n}) - {n} == nx.descendants(g, n)


def test_a_cycle_has_no_order_and_a_dag_the_generations_order():
    g = Digraph()
    for u, v in (("a", "c"), ("b", "c"), ("c", "d"), ("b", "d")):
        g.add_edge(u, v, role="input")
    assert g.topological_order() == ("a", "b", "c", "d")
    g.add_edge("d", "b")
    assert g.topological_order() is None


def test_mtl_check_of_a_valid_spec_never_imports_networkx():
    code = ("import sys\nfrom mtl_dsl.language.check import check_file\n"
            "assert check_file('specs/ple.mtl').ok\nprint('networkx' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


def test_the_fixtures_hold_cyclic_graphs_too():
    assert any(not p.values[0].acyclic for p in graphs())  # the networkx path is exercised
