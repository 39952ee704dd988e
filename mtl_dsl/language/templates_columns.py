"""The `columns` template: task columns in levels with a per-level interaction between them
(cross-stitch, AdaTT), expanded into ordinary expert groups and gates.

The interaction is a gate of form `stitch` or `fusion` (language/graph.py), whose first listed
expert group is the reading task's own column, so a hand-written spec can place the same
interaction anywhere (HoME's spec does: specs/home.mtl); the template only saves the typing.
"""

from __future__ import annotations

from . import registry as reg
from .ir import ExpertGroup, Extract, Gate
from .syntax import Ref


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
