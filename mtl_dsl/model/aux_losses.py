"""The auxiliary losses a spec's gates add to the training loss: the importance loss of
`balance=` and DSelect-k's selector loss.

An aux term names the env keys it reads (`keys`); the loop keeps those from its one forward
pass (`CompiledModel.aux_keeps`) and the term computes its weighted loss from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from ..language.graph import TaskGraph
from ..language.ir import Spec
from .gates import RKEY, WKEY, DSelectGate, importance_loss, selector_loss


@dataclass(frozen=True)
class AuxTerm:
    """One weighted auxiliary loss computed from kept env tensors."""

    keys: tuple[str, ...]
    loss: Callable[..., Tensor]
    weight: float

    def __call__(self, kept: dict[str, Tensor]) -> Tensor:
        missing = [k for k in self.keys if k not in kept]
        if missing:
            raise KeyError(f"aux loss needs {missing} from the forward pass: run "
                           "forward_keeping(batch, model.aux_keeps())")
        return self.weight * self.loss(*(kept[k] for k in self.keys))


def gate_aux_terms(spec: Spec, graph: TaskGraph, gates: nn.ModuleDict,
                   key: Callable[[str], str]) -> dict[str, AuxTerm]:
    """Loss name -> term, for every built gate with `balance > 0` ('balance:GATE') and every
    DSelect-k gate whose selector loss is not identically zero ('select:GATE')."""
    terms: dict[str, AuxTerm] = {}
    for gate in spec.gates:
        if key(gate.name) not in gates or graph.form(gate.name) not in ("softmax", "dselect"):
            continue
        p, block = gate.params, gates[key(gate.name)]
        if p.balance > 0:
            terms[f"balance:{gate.name}"] = AuxTerm((WKEY + gate.name,), importance_loss,
                                                    p.balance)
        if isinstance(block, DSelectGate) and (p.entropy > 0 or not block.power_of_two):
            entropy, power = p.entropy, block.power_of_two
            terms[f"select:{gate.name}"] = AuxTerm(
                (RKEY + gate.name,), lambda r, e=entropy, t=power: selector_loss(r, e, t), 1.0)
    return terms
