"""The task graph: which block feeds which, and from that, what is shared.

Every node has a `kind`, one of a small fixed set (`KINDS`; docs/internals.md, "node
kinds"), and later stages dispatch on it through one table per stage (build, plan,
shape, draw), as torch.fx's interpreter does with its handful of ops:

    embedding   one embedding table (`emb:TABLE`), read by the sparse features using it
    feature     one feature of the data (dense, sparse or sequence)
    input       a concatenation of features and inputs
    expert      a group of `count` experts on one input
    gate        a softmax over experts (or, for MetaHeac, over critics)
    tower       an MLP on one input
    critics     MetaHeac's shared critics: the weights, applied once per task
    critic_use  one task's application of the critics (`CRITICS@TASK`); owns no weights
    task        a supervised output

Gates and tasks also carry a `form` (`GATE_FORMS`, `TASK_FORMS`): which computation
of that kind the node is, read from the IR once here so that no later stage tells
them apart by probing fields. An edge means "the output of u is read by v"; edges
between tasks are transfers (role product, ait or calibrate). Which parameters are
shared between tasks is decided here by reachability, for every architecture alike,
never by per-model code. This module imports neither torch nor numpy.

The graph is a `networkx.DiGraph` (`TaskGraph.g`), and every question of order and
reachability is networkx's: the order is `topological_sort` (Kahn's algorithm by
generations, each in the order nodes were added, so the same spec always gives the same
order, and with it the same initialisation of the parameters under a seed); a cyclic spec
is ordered through its condensation; reachability, sharing included, is one breadth-first
search (`bfs_layers`, from any set of nodes, forwards or backwards), and E401's cycle is
`simple_cycles` (language/validation/model.py). tests/test_graph_order.py holds the order
and the sharing to a golden file.
"""

from __future__ import annotations

from functools import cached_property
from itertools import chain

import networkx as nx

from . import registry as reg
from .ir import Critics, ExpertGroup, Feature, Gate, Input, Spec, Task, Tower

KINDS = ("embedding", "feature", "input", "expert", "gate", "tower", "critics", "critic_use",
         "task")
PARAMETRISED = ("embedding", "expert", "gate", "tower", "critics")
# softmax: softmax(W x) over experts (MMoE, CGC, PLE); task: MetaHeac's expert gate, which
# also reads a learnt task embedding; critics: MetaHeac's critic gate, mixing the critics
# stitch: cross-stitch's constant mix of the task columns; fusion: AdaTT's/HoME's softmax over
# experts plus a residual of the task's own group
GATE_FORMS = ("softmax", "task", "critics", "stitch", "fusion", "dselect")  # dselect: DSelect-k
# head: a head on the tower; ait: a head on AITM's transferred z_t; product: a probability
# product of other tasks (ESMM); critics: the logit its MetaHeac critic gate gives
TASK_FORMS = ("head", "ait", "product", "critics")
# GradNorm's last shared layer: the first of these groups of kinds that has shared nodes
LAST_SHARED = (("expert",), ("tower", "critics"), ("embedding",))


def table_of(spec: Spec, feature: Feature) -> str:
    """The embedding table a sparse feature looks up: its own, or the one it shares."""
    index = {f.name: f for f in spec.features}
    seen = {feature.name}
    while feature.embedded and feature.params.share in index:
        feature = index[feature.params.share]
        if feature.name in seen:
            break
        seen.add(feature.name)
    return feature.name


def embedding_node(table: str) -> str:
    return f"emb:{table}"


def critic_use(critics: str, task: str | None) -> str:
    """The node for one task's application of shared critics."""
    return f"{critics}@{task}"


def gate_form(gate: Gate) -> str:
    """Which of GATE_FORMS a gate is."""
    if gate.mixes == "critics":
        return "critics"
    if isinstance(gate.params, (reg.StitchGateParams, reg.FusionGateParams)):
        return "stitch" if isinstance(gate.params, reg.StitchGateParams) else "fusion"
    if isinstance(gate.params, reg.DSelectGateParams):
        return "dselect"
    return "task" if gate.task_embedding is not None else "softmax"


def task_form(spec: Spec, task: Task) -> str:
    """Which of TASK_FORMS a task is."""
    if task.product is not None:
        return "product"
    source = spec.node(task.tower.name) if task.tower is not None else None
    if isinstance(source, Gate) and gate_form(source) == "critics":
        return "critics"
    if any(t.kind == "ait" and b == task.name for t in spec.transfers for _, b in t.edges):
        return "ait"
    return "head"


def build_graph(spec: Spec) -> nx.DiGraph:
    """Nodes carry `kind` and the IR `node`; unknown references are left for validation.
    Nodes and edges are added in declaration order, which the topological order follows."""
    g = nx.DiGraph()
    for f in spec.features:
        g.add_node(f.name, kind="feature", node=f)
        if f.embedded:
            table = embedding_node(table_of(spec, f))
            g.add_node(table, kind="embedding", node=None)
            g.add_edge(table, f.name, role="lookup")
    for kind, nodes in (("input", spec.inputs), ("expert", spec.experts),
                        ("tower", spec.towers), ("critics", spec.critics)):
        for n in nodes:
            g.add_node(n.name, kind=kind, node=n)
    for gate in spec.gates:
        g.add_node(gate.name, kind="gate", node=gate, form=gate_form(gate))
    for task in spec.tasks:
        g.add_node(task.name, kind="task", node=task, form=task_form(spec, task))

    def link(ref_name: str, target: str, role: str) -> None:
        source = spec.resolve(ref_name)
        if source in g and source != target:
            g.add_edge(source, target, role=role)
        elif source == target:
            g.add_edge(source, target, role=role)  # a self-loop: reported as a cycle

    for i in spec.inputs:
        for part in i.parts:
            link(part.name, i.name, "concat")
    for f in spec.features:  # DUPN: a sequence's attention reads its query feature
        if f.query is not None:
            link(f.query, f.name, "query")
    for e in spec.experts:
        link(e.input.name, e.name, "input")
    for c in spec.critics:
        # the critics' weights are one node; each task's use of them is another, so that
        # reachability keeps one task's expert gate from looking shared through them
        for task, ref in zip(c.tasks, c.inputs):
            use = critic_use(c.name, task)
            g.add_node(use, kind="critic_use", node=None, critics=c.name, task=task)
            g.add_edge(c.name, use, role="weights")
            link(ref.name, use, "input")
    for gate in spec.gates:
        link(gate.input.name, gate.name, "gate-input")
        for over in gate.over:
            source = critic_use(over.name, gate.task) if gate.mixes == "critics" else over.name
            link(source, gate.name, "mix")
    for t in spec.towers:
        link(t.input.name, t.name, "input")
        if isinstance(t.net, reg.PepnetParams):  # PEPNet: its gates read the prior
            link(t.net.by, t.name, "gate-input")
    for task in spec.tasks:
        if task.tower is not None:
            link(task.tower.name, task.name, "tower")
        for factor in task.factors:
            if factor.name in g and g.nodes[factor.name]["kind"] == "task":
                link(factor.name, task.name, "product")
    for transfer in spec.transfers:
        for a, b in transfer.edges:
            if g.nodes.get(a, {}).get("kind") == "task" == g.nodes.get(b, {}).get("kind"):
                g.add_edge(a, b, role=transfer.kind)  # a non-task in a chain is E204, no edge
    return g


class TaskGraph:
    """The graph plus the questions every later stage asks of it."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.g: nx.DiGraph = build_graph(spec)

    def kind(self, name: str) -> str | None:
        """One of KINDS; None for a name that is not in the graph."""
        return self.g.nodes[name]["kind"] if name in self.g else None

    def form(self, name: str) -> str:
        """A gate's GATE_FORMS entry or a task's TASK_FORMS entry."""
        return self.g.nodes[name]["form"]

    def critic_use_of(self, name: str) -> tuple[str, str]:
        """A critic_use node's (critics, task)."""
        data = self.g.nodes[name]
        return data["critics"], data["task"]

    @cached_property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.spec.tasks)

    @cached_property
    def acyclic(self) -> bool:
        return nx.is_directed_acyclic_graph(self.g)

    @cached_property
    def order(self) -> tuple[str, ...]:
        """The nodes in topological order: networkx's `topological_sort`, which follows the
        order nodes were added (declaration order), so it is the same on every run. A cyclic
        graph (which validation reports as E401) still has one, so that no question asked of
        an invalid spec raises: its condensation in networkx's lexicographical order, each
        cycle's nodes together in declaration order."""
        if self.acyclic:
            return tuple(nx.topological_sort(self.g))
        rank = {n: i for i, n in enumerate(self.g)}
        cond = nx.condensation(self.g)
        return tuple(n for scc in nx.lexicographical_topological_sort(cond)
                     for n in sorted(cond.nodes[scc]["members"], key=rank.__getitem__))

    @cached_property
    def tasks_of(self) -> dict[str, frozenset[str]]:
        """For every node, the tasks with a loss of their own whose outputs depend on it
        (through towers, products and transfers alike, cycles too): each task's ancestors,
        one search per task, so a template of thousands of nodes is checked in time linear
        in its size times the number of tasks."""
        found: dict[str, set[str]] = {n: set() for n in self.g}
        for task in self.spec.supervised:
            for n in self.reaching({task.name}):
                found[n].add(task.name)
        return {n: frozenset(tasks) for n, tasks in found.items()}

    def reaching(self, targets: set[str] | frozenset[str]) -> set[str]:
        """The nodes with a path to any of `targets` (the targets in the graph included),
        by one breadth-first search backwards."""
        return self._closure(self.g.reverse(copy=False), targets)

    def reached(self, sources: set[str] | frozenset[str]) -> set[str]:
        """The nodes reachable from any of `sources` (the sources included)."""
        return self._closure(self.g, sources)

    @staticmethod
    def _closure(g: nx.DiGraph, starts: set[str] | frozenset[str]) -> set[str]:
        present = [n for n in starts if n in g]
        return set(chain.from_iterable(nx.bfs_layers(g, present))) if present else set()

    def is_shared(self, name: str) -> bool:
        return len(self.tasks_of.get(name, ())) >= 2

    @cached_property
    def shared(self) -> tuple[str, ...]:
        """Parametrised nodes that two or more tasks depend on, in topological order."""
        return tuple(n for n in self.order if self.kind(n) in PARAMETRISED and self.is_shared(n))

    @cached_property
    def last_shared(self) -> tuple[str, ...]:
        """The last shared layer(s) for GradNorm: shared expert groups with no shared expert
        group downstream; else shared towers; else shared embedding tables."""
        for kinds in LAST_SHARED:
            nodes = [n for n in self.shared if self.kind(n) in kinds]
            above = self.reaching({p for n in nodes for p in self.g.predecessors(n)})
            frontier = [n for n in nodes if n not in above]
            if frontier:
                return tuple(frontier)
        return ()

    @cached_property
    def widths(self) -> dict[str, int]:
        """The output width of every node (a gate's is its experts' width)."""
        spec, w = self.spec, {}
        for n in self.order:
            kind = self.kind(n)
            if kind == "critic_use":
                w[n] = 1  # one task's use of the critics: a logit per critic
            elif kind != "embedding":  # a table's rows have the width of its features
                w[n] = self._width(self.g.nodes[n]["node"], w, spec)
        return w

    @staticmethod
    def _width(node, w: dict[str, int], spec: Spec) -> int:
        if isinstance(node, Feature):
            return node.width
        if isinstance(node, Input):
            return sum(w.get(spec.resolve(p.name), 0) for p in node.parts)
        if isinstance(node, (ExpertGroup, Tower)):
            return node.net.widths[-1] if node.net.widths else w.get(spec.resolve(node.input.name), 0)
        if isinstance(node, Critics):
            return 1  # each critic gives one logit
        if isinstance(node, Gate):
            if node.mixes == "critics":
                return 1
            return w.get(spec.resolve(node.over[0].name), 0) if node.over else 0
        if isinstance(node, Task):
            return node.out_dim
        return 0

    def experts_of(self, gate: Gate) -> int:
        """How many experts a gate mixes (the softmax's size)."""
        counts = self._expert_counts
        return sum(counts.get(self.spec.resolve(r.name), 0) for r in gate.over)

    @cached_property
    def _expert_counts(self) -> dict[str, int]:
        """Expert group -> its count, built once: validation asks it of every gate."""
        return {e.name: e.count for e in self.spec.experts}
