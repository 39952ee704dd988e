"""Templates expanded into ordinary nodes: PLE/CGC levels, MetaHeac's experts, gates and
critics, and the `columns` template's task columns (cross-stitch, AdaTT), which the graph, the
diagram and the compiler then treat like any other node.

The `columns` interaction is a gate of form `stitch` or `fusion` (language/graph.py) whose
first listed expert group is the reading task's own column, so a hand-written spec can place
the same interaction anywhere (HoME's spec does: specs/home.mtl); the template only saves the
typing."""

from __future__ import annotations

from . import registry as reg
from .ir import Critics, ExpertGroup, Extract, Gate
from .syntax import Ref


def expand_template(e: Extract) -> tuple[list[ExpertGroup], list[Gate], list[Critics]]:
    """The nodes a template statement stands for."""
    if e.kind == "heac":
        return expand_heac(e)
    if e.kind == "columns":
        return (*expand_columns(e), [])
    return (*expand_ple(e), [])


def expand_heac(e: Extract) -> tuple[list[ExpertGroup], list[Gate], list[Critics]]:
    """MetaHeac (docs/architectures.md): shared experts; per task an expert gate and a critic
    gate from the task's embedding (and the input); shared critics on each task's mix."""
    p, ref = e.params, (lambda name: Ref(name, e.span))
    experts = ExpertGroup(name=f"{e.name}.experts", span=e.span, count=p.experts, input=e.input,
                          net=p.expert, group=e.name)
    common = dict(span=e.span, input=e.input, group=e.name, task_embedding=p.task_dim,
                  use_input=p.gate_input == "both")
    gates = [Gate(name=f"{e.name}.gate_{t}", over=(ref(experts.name),), task=t, **common)
             for t in p.tasks]
    critics = Critics(name=f"{e.name}.critics", span=e.span, count=p.critics,
                      inputs=tuple(ref(g.name) for g in gates), tasks=p.tasks, net=p.critic,
                      group=e.name)
    mixes = [Gate(name=f"{e.name}.mix_{t}", over=(ref(critics.name),), task=t,
                  mixes="critics", **common) for t in p.tasks]
    return [experts], gates + mixes, [critics]


def expand_ple(e: Extract) -> tuple[list[ExpertGroup], list[Gate]]:
    """PLE (docs/architectures.md): level j's task-k experts and gate read g_k^(j-1), the shared
    experts and the shared gate read g_s^(j-1); there is no shared gate on the last level."""
    p, experts, gates = e.params, [], []
    prev = {t: e.input for t in p.tasks}
    prev_shared = e.input
    for level in range(1, p.levels + 1):
        stem = f"{e.name}.l{level}"
        shared = ExpertGroup(name=f"{stem}.shared", span=e.span, count=p.shared,
                             input=prev_shared, net=p.expert, group=stem)
        specific = {t: ExpertGroup(name=f"{stem}.{t}", span=e.span, count=p.specific,
                                   input=prev[t], net=p.expert, group=stem) for t in p.tasks}
        experts += [*specific.values(), shared]
        ref = lambda name: Ref(name, e.span)  # noqa: E731
        nxt = {}
        for t in p.tasks:
            gate = Gate(name=f"{stem}.gate_{t}", span=e.span, input=prev[t],
                        over=(ref(specific[t].name), ref(shared.name)), params=p.gate, group=stem)
            gates.append(gate)
            nxt[t] = ref(gate.name)
        if level < p.levels:
            everyone = tuple(ref(g.name) for g in [*specific.values(), shared])
            gates.append(Gate(name=f"{stem}.gate_shared", span=e.span, input=prev_shared,
                              over=everyone, params=p.gate, group=stem))
            prev_shared = ref(f"{stem}.gate_shared")
        prev = nxt
    return experts, gates


# ---- the `columns` template: task columns with a per-level interaction ----

def _mix_params(p: reg.ColumnsParams) -> reg.StitchGateParams | reg.FusionGateParams:
    """The interaction gate's parameters for `mix=`."""
    if p.mix == "cross_stitch":
        return reg.StitchGateParams(own=p.own)
    return reg.FusionGateParams(residual=p.residual)


def expand_columns(e: Extract) -> tuple[list[ExpertGroup], list[Gate]]:
    """Level j: task k's experts read x_k^(j-1) (the shared experts read x_s^(j-1)); x_k^(j) is
    task k's interaction gate over [its own experts, the other tasks' experts, the shared
    ones]; below the last level the shared module gets a gate of its own (AdaTT-sp)."""
    p, experts, gates = e.params, [], []
    ref = lambda name: Ref(name, e.span)  # noqa: E731
    prev = {t: e.input for t in p.tasks}
    prev_shared = e.input
    mix = _mix_params(p)
    for level in range(1, p.levels + 1):
        stem = f"{e.name}.l{level}"
        own = {t: ExpertGroup(name=f"{stem}.{t}", span=e.span, count=p.specific, input=prev[t],
                              net=p.expert, group=stem) for t in p.tasks}
        shared = [ExpertGroup(name=f"{stem}.shared", span=e.span, count=p.shared,
                              input=prev_shared, net=p.expert, group=stem)] if p.shared else []
        experts += [*own.values(), *shared]
        columns = [*own, *(["shared"] if shared else [])]
        names = {t: f"{stem}.{t}" for t in columns}
        readers = [*p.tasks, *(["shared"] if shared and level < p.levels else [])]
        nxt = {}
        for t in readers:
            order = [t, *(c for c in columns if c != t)]
            source = prev_shared if t == "shared" else prev[t]
            gate = Gate(name=f"{stem}.mix_{t}", span=e.span, input=source,
                        over=tuple(ref(names[c]) for c in order), params=mix, group=stem)
            gates.append(gate)
            nxt[t] = ref(gate.name)
        prev_shared = nxt.pop("shared", prev_shared)
        prev = nxt
    return experts, gates
