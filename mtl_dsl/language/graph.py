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

The graph is held in :class:`Digraph`, the small part of networkx's DiGraph interface the
stages use (nodes with attributes, successors, predecessors, edges with their role), and
its topological order is networkx's own algorithm (`topological_generations`) on it:
`import networkx` alone costs about 0.15-0.2 s, a third of `mtl check`, which needs no
more than this for a valid spec. networkx proper is imported for what only it does here,
on cyclic specs (the condensation, `simple_cycles` for E401) and on request (`TaskGraph.nx`,
the same graph as a `networkx.DiGraph`); tests/test_graph_order.py holds the order and the
edges equal to networkx's on every shipped spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from . import registry as reg
from .ir import Critics, ExpertGroup, Feature, Gate, Input, Spec, Task, Tower

if TYPE_CHECKING:
    import networkx as nx

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


class _Edges:
    """`g.edges` as networkx has it: iterable as (u, v), callable as edges(data="role")."""

    def __init__(self, succ: dict[str, dict[str, dict]]):
        self.succ = succ

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((u, v) for u, nbrs in self.succ.items() for v in nbrs)

    def __call__(self, data: str | None = None) -> Iterator[tuple]:
        if data is None:
            return iter(self)
        return ((u, v, d.get(data)) for u, nbrs in self.succ.items() for v, d in nbrs.items())


class Digraph:
    """A directed graph with node and edge attributes, in insertion order, with the methods
    of `networkx.DiGraph` that the stages call (same names, same orders)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.succ: dict[str, dict[str, dict[str, Any]]] = {}
        self.pred: dict[str, dict[str, dict[str, Any]]] = {}
        self.edges = _Edges(self.succ)

    def add_node(self, name: str, **attrs: Any) -> None:
        if name not in self.nodes:
            self.nodes[name], self.succ[name], self.pred[name] = {}, {}, {}
        self.nodes[name].update(attrs)

    def add_edge(self, u: str, v: str, **attrs: Any) -> None:
        self.add_node(u)
        self.add_node(v)
        data = self.succ[u].setdefault(v, {})
        data.update(attrs)
        self.pred[v][u] = data

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def successors(self, name: str) -> Iterator[str]:
        return iter(self.succ[name])

    def predecessors(self, name: str) -> Iterator[str]:
        return iter(self.pred[name])

    def topological_order(self) -> tuple[str, ...] | None:
        """networkx's `topological_sort` (Kahn's algorithm by generations, each in node
        order), or None when the graph has a cycle."""
        indegree = {v: len(p) for v, p in self.pred.items() if p}
        generation, order = [v for v, p in self.pred.items() if not p], []
        while generation:
            order += generation
            following = []
            for node in generation:
                for child in self.succ[node]:
                    indegree[child] -= 1
                    if indegree[child] == 0:
                        following.append(child)
                        del indegree[child]
            generation = following
        return None if indegree else tuple(order)

    def to_networkx(self) -> "nx.DiGraph":
        """The same nodes, edges and attributes (shared dicts) as a networkx DiGraph."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.nodes.items())
        g.add_edges_from((u, v, d) for u, nbrs in self.succ.items() for v, d in nbrs.items())
        return g


def build_graph(spec: Spec) -> Digraph:
    """Nodes carry `kind` and the IR `node`; unknown references are left for validation."""
    g = Digraph()
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
        self.g = build_graph(spec)

    @cached_property
    def nx(self) -> "nx.DiGraph":
        """The graph as a `networkx.DiGraph`, for networkx's algorithms (imported here)."""
        return self.g.to_networkx()

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
    def _order(self) -> tuple[str, ...] | None:
        return self.g.topological_order()

    @cached_property
    def acyclic(self) -> bool:
        return self._order is not None

    @cached_property
    def tasks_of(self) -> dict[str, frozenset[str]]:
        """For every node, the tasks with a loss of their own whose outputs depend on it
        (through towers, products and transfers alike). One pass over the graph in reverse
        order (a cycle's nodes share their set), not one search per node: a template of
        thousands of nodes is checked in linear time."""
        supervised = {t.name for t in self.spec.supervised}
        if self.acyclic:  # every node its own component: no condensation to build (its
            return self._tasks_of_dag(supervised)  # networkx build is most of a big check)
        cond, per_scc = self._condensation, {}
        for scc in reversed(self._scc_order):
            tasks = set(cond.nodes[scc]["members"] & supervised)
            for below in cond.successors(scc):
                tasks |= per_scc[below]
            per_scc[scc] = frozenset(tasks)
        return {n: per_scc[scc] for n, scc in cond.graph["mapping"].items()}

    def _tasks_of_dag(self, supervised: set[str]) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for n in reversed(self.order):
            tasks = {n} & supervised
            for below in self.g.successors(n):
                tasks |= out[below]
            out[n] = frozenset(tasks)
        return out

    def reaching(self, targets: set[str] | frozenset[str]) -> set[str]:
        """The nodes with a path to any of `targets` (the targets in the graph included),
        by one backward search."""
        seen = {t for t in targets if t in self.g}
        stack = list(seen)
        while stack:
            for p in self.g.predecessors(stack.pop()):
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def reached(self, sources: set[str] | frozenset[str]) -> set[str]:
        """The nodes reachable from any of `sources` (the sources included)."""
        seen = {s for s in sources if s in self.g}
        stack = list(seen)
        while stack:
            for n in self.g.successors(stack.pop()):
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return seen

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
    def _condensation(self) -> "nx.DiGraph":
        import networkx as nx

        return nx.condensation(self.nx)

    @cached_property
    def _scc_order(self) -> tuple[int, ...]:
        import networkx as nx

        return tuple(nx.lexicographical_topological_sort(self._condensation))

    @cached_property
    def order(self) -> tuple[str, ...]:
        """The nodes in topological order. A cyclic graph (which validation reports as E401)
        still has one: its cycles' nodes together, in declaration order, so that no question
        asked of an invalid spec raises."""
        if self._order is not None:
            return self._order
        rank = {n: i for i, n in enumerate(self.g.nodes)}
        cond = self._condensation
        return tuple(n for scc in self._scc_order
                     for n in sorted(cond.nodes[scc]["members"], key=rank.__getitem__))

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

    @cached_property
    def _experts(self) -> dict[str, ExpertGroup]:
        """Expert groups by name, built once: every gate asks (experts_of)."""
        return {e.name: e for e in self.spec.experts}

    def experts_of(self, gate: Gate) -> int:
        """How many experts a gate mixes (the softmax's size)."""
        index = self._experts
        return sum(index[self.spec.resolve(r.name)].count for r in gate.over
                   if self.spec.resolve(r.name) in index)
