"""Which torch module implements each net and gate kind of the registry, keyed by the kind's
name: the language names the kinds (language/registry/kinds.py) without knowing torch, and
the model owns their implementations here. tests/test_compile.py holds this table to the
registry's roles, so a kind without a module is caught."""

from __future__ import annotations

from torch import nn

from ..language import registry as reg
from .blocks import MLP, SoftmaxGate
from .gates import DSelectGate
from .interactions import FusionGate, StitchGate
from .pepnet import PEPNet

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "linear": MLP, "pepnet": PEPNet}
GATES: dict[str, type[nn.Module]] = {"softmax": SoftmaxGate, "dselect": DSelectGate,
                                     "stitch": StitchGate, "fusion": FusionGate}
TABLES: dict[str, dict[str, type[nn.Module]]] = {"net": NETS, "gate": GATES}


def block_class(role: str, params: type[reg.Params]) -> type[nn.Module]:
    """The module of the kind in `role` whose parameter model is `params`."""
    return TABLES[role][reg.kind_of(role, params)]
