"""Which torch module implements each net and gate kind of the registry, keyed by the kind's
name, and how a spec's parameter models become the modules' constructor arguments.

The language names the kinds (language/registry/kinds.py) without knowing torch; the block
modules (model/blocks.py, gates, interactions, pepnet, relations, sequences) take plain
values and know nothing of the registry, so that `mtl export -o model.py` can copy their
source as it is (docs/export.md). This module stands between: the compiler builds every
block from a `Call` made here and keeps the calls, which the standalone file writes out as
its constructor. tests/test_compile.py holds the tables to the registry's roles, so a kind
without a module is caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..language import registry as reg
from .blocks import MLP
from .gates import DSelectGate, SoftmaxGate
from .interactions import FusionGate, StitchGate
from .pepnet import PEPNet

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "linear": MLP, "pepnet": PEPNet}
GATES: dict[str, type[nn.Module]] = {"softmax": SoftmaxGate, "dselect": DSelectGate,
                                     "stitch": StitchGate, "fusion": FusionGate}
TABLES: dict[str, dict[str, type[nn.Module]]] = {"net": NETS, "gate": GATES}


def block_class(role: str, params: type[reg.Params]) -> type[nn.Module]:
    """The module of the kind in `role` whose parameter model is `params`."""
    return TABLES[role][reg.kind_of(role, params)]


@dataclass(frozen=True)
class Call:
    """One block's constructor call, `cls(*args, **kwargs)`, with plain values only (numbers,
    strings, tuples, dicts, and the calls of nested blocks, built first): what the compiler
    builds, and what the standalone file writes."""

    cls: type[nn.Module]
    args: tuple = ()
    kwargs: dict[str, object] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return self.cls(*_built(self.args), **_built(self.kwargs))


def _built(value):
    """`value` with every Call in it (at any depth of tuples and dicts) built."""
    if isinstance(value, Call):
        return value.build()
    if isinstance(value, tuple):
        return tuple(_built(v) for v in value)
    if isinstance(value, dict):
        return {k: _built(v) for k, v in value.items()}
    return value


def net_options(p: reg.MLPParams) -> dict[str, object]:
    """The keyword arguments of an MLP-shaped block (MLP, ExpertGroup, Critics, Transfer)."""
    return {"widths": tuple(p.widths), "act": p.act, "dropout": p.dropout, "norm": p.norm,
            "feature_gate": p.feature_gate}


def net_call(p: reg.MLPParams, in_dim: int, by_dim: int | None = None) -> Call:
    """A tower of any net kind on an input of width `in_dim`; PEPNet also reads its prior
    (`by`, of width `by_dim`) and has no feature gate."""
    cls = block_class("net", type(p))
    if isinstance(p, reg.PepnetParams):
        options = {k: v for k, v in net_options(p).items() if k != "feature_gate"}
        return Call(cls, (in_dim, by_dim), options | {"gamma": p.gamma})
    return Call(cls, (in_dim,), net_options(p))


def gate_call(p: reg.Params, in_dim: int, n: int, own: int = 1) -> Call:
    """A gate of any registry kind over n experts, the first `own` of them the task's own
    (cross-stitch and fusion gates); its losses (balance, entropy) are the compiler's."""
    cls = block_class("gate", type(p))
    if isinstance(p, reg.DSelectGateParams):
        return Call(cls, (in_dim, n), {"k": p.k, "gamma": p.gamma})
    if isinstance(p, reg.StitchGateParams):
        return Call(cls, (n, own), {"own": p.own})
    if isinstance(p, reg.FusionGateParams):
        return Call(cls, (in_dim, n, own), {"temperature": p.temperature,
                                            "residual": p.residual})
    return Call(cls, (in_dim, n), {"temperature": p.temperature, "noise": p.noise,
                                   "top_k": p.top_k})
