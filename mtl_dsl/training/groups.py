"""The parameter groups a weighting acts on, read once from the compiled model and its graph.

A weighting never reaches into the model: the training loop builds one `ParamGroups` and
hands it to `Weighting.attach`. The groups follow the task graph (docs/weighting.md):

* `shared`: parameters of the blocks two or more tasks depend on, without embedding tables;
* `shared_with_embeddings`: the same with the shared embedding tables (`embeddings=true`);
* `last_shared`: the last Linear weight of each last-shared block (GradNorm's W);
* `tasks`: each task's own parameters, its head included;
* `device`: where the parameters are (a method's preference vector goes next to them);
* `representations`: shared blocks (not embedding tables) whose output a task-specific
  block reads, the tensors `on=representation` balances, and `below[j]`: the indices of
  the representations downstream of the j-th (PLE's levels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..language.graph import TaskGraph


@dataclass(frozen=True)
class ParamGroups:
    shared: tuple[nn.Parameter, ...] = ()
    shared_with_embeddings: tuple[nn.Parameter, ...] = ()
    last_shared: tuple[nn.Parameter, ...] = ()
    tasks: dict[str, tuple[nn.Parameter, ...]] = field(default_factory=dict)
    representations: tuple[str, ...] = ()
    below: tuple[tuple[int, ...], ...] = ()
    device: torch.device = torch.device("cpu")  # where the model's parameters are

    @classmethod
    def of(cls, model: nn.Module, graph: TaskGraph) -> "ParamGroups":
        """The groups of a compiled model (`mtl_dsl.model.compiler.CompiledModel`)."""
        reps = representation_nodes(graph)
        return cls(shared=_trainable(model.shared_parameters()),
                   shared_with_embeddings=_trainable(
                       model.shared_parameters(include_embeddings=True)),
                   last_shared=_trainable(model.last_shared_parameters()),
                   tasks={t: tuple(model.task_parameters(t)) for t in graph.task_names},
                   representations=reps, below=downstream(graph, reps),
                   device=next((p.device for p in model.parameters()), torch.device("cpu")))

    def balanced(self, embeddings: bool) -> tuple[nn.Parameter, ...]:
        """The shared parameters a gradient method balances with `on=parameters`."""
        return self.shared_with_embeddings if embeddings else self.shared


def _trainable(params) -> tuple[nn.Parameter, ...]:
    return tuple(p for p in params if p.requires_grad)


def representation_nodes(graph: TaskGraph) -> tuple[str, ...]:
    """Shared blocks (not embedding tables) whose output a task-specific block reads."""
    return tuple(n for n in graph.shared if graph.kind(n) != "embedding"
                 and any(not graph.is_shared(s) for s in graph.g.successors(n)))


def downstream(graph: TaskGraph, reps: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """below[j]: the indices of the representations that the j-th one feeds (directly or not),
    by the graph's own reachability (`TaskGraph.reached`)."""
    fed = [graph.reached({n}) - {n} for n in reps]
    return tuple(tuple(k for k, m in enumerate(reps) if m in below) for below in fed)
