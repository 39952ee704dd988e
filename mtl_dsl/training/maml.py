"""MAML-style meta-learning across tasks (MetaHeac's training, `train meta=maml`).

For each task: split its batch into support and query rows, adapt a *copy* of the
parameters with `inner_steps` SGD steps on the support loss, and score the adapted
copy on the query rows. The sum of the query losses updates the original,
task-general parameters. The model itself is never modified in the inner loop:
`torch.func.functional_call` runs it with the adapted tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from ..data.values import label_key
from ..language.ir import Task
from .distributed import shard
from .metrics import task_loss

Params = dict[str, Tensor]


def split(batch: dict[str, Tensor], support: float) -> tuple[dict, dict]:
    """The first `support` share of a (shuffled) batch, and the rest."""
    n = next(iter(batch.values())).shape[0]
    k = min(max(1, int(round(n * support))), n - 1)
    return {key: v[:k] for key, v in batch.items()}, {key: v[k:] for key, v in batch.items()}


def loss_of(model: torch.nn.Module, params: Params, batch: dict[str, Tensor], task: Task
            ) -> Tensor:
    out = functional_call(model, params, (batch,))
    return task_loss(task.kind, out[task.name], batch[label_key(task.name)])


def adapt(model: torch.nn.Module, params: Params, batch: dict[str, Tensor], task: Task,
          inner_lr: float, steps: int, first_order: bool = True) -> Params:
    """`steps` SGD steps on `task`'s loss, on new tensors; `params` are left untouched.

    First-order (FOMAML): the inner gradients are constants, so the outer gradient
    reaches the original parameters through the identity `p - lr * g`."""
    fast = dict(params)
    for _ in range(steps):
        loss = loss_of(model, fast, batch, task)
        names = [n for n, p in fast.items() if p.requires_grad]
        grads = torch.autograd.grad(loss, [fast[n] for n in names], allow_unused=True,
                                    create_graph=not first_order)
        for name, g in zip(names, grads):
            if g is not None:
                fast[name] = fast[name] - inner_lr * (g.detach() if first_order else g)
    return fast


def query_losses(model: torch.nn.Module, batch: dict[str, Tensor], tasks: list[Task],
                 inner_lr: float, steps: int, support: float, first_order: bool = True
                 ) -> dict[str, Tensor]:
    """Each task's loss on its query rows after adapting on its support rows."""
    return rank_query_losses(model, batch, tasks, inner_lr, steps, support, first_order)[0]


def rank_query_losses(model: torch.nn.Module, batch: dict[str, Tensor], tasks: list[Task],
                      inner_lr: float, steps: int, support: float, first_order: bool = True,
                      group=None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(each task's loss on its query rows after adapting on its support rows, the query
    rows those losses are means over).

    Across ranks (`group`, :class:`~mtl_dsl.training.distributed.Group`) the shards are
    gathered into the global batch first: every rank adapts on the global batch's support
    rows (the same adaptation everywhere, repeated on each rank) and scores its own slice
    of the global query rows, so the global-mean losses and the averaged gradients are one
    process's (docs/scaling.md)."""
    params = dict(model.named_parameters())
    whole = group.gather(batch) if group is not None and group.world > 1 else batch
    support_rows, query_rows = split(whole, support)
    if whole is not batch:
        query_rows = group.pad(next(shard([query_rows], group.rank, group.world)), query_rows)
    out = {}
    for task in tasks:
        fast = adapt(model, params, support_rows, task, inner_lr, steps, first_order)
        out[task.name] = loss_of(model, fast, query_rows, task)
    return out, query_rows
