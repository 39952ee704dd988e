"""The gradient-conflict probe: how much the tasks' gradients on the shared parameters agree.

A diagnostic, not part of any weighting: the training loop calls `gradient_conflict` once per
epoch (and once before training), and logs the result as each epoch record's `grad_cosine`.
Its cost: `PROBE_BATCHES` batches of at most `PROBE_ROWS` rows, each one forward pass and K backward passes restricted to
the shared parameters (K = the number of trained tasks), in eval mode so no batch-norm
statistics change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from itertools import islice

from torch import Tensor, nn

from .weighting.balancing import cosines, jacobian

PROBE_BATCHES = 4  # training batches the gradient conflict is measured on, each epoch
# ... of at most this many rows each: 2,048 rows in all measure a cosine well enough for a
# diagnostic, and the probe then costs about one training step, whatever `batch=` is (with
# 4 full batches of 2,048 it was 6% of a benchmark epoch: docs/benchmarks.md)
PROBE_ROWS = 512


def conflict(shared: Sequence[nn.Parameter], losses: dict[str, Tensor], tasks: list[str]
             ) -> dict[str, float]:
    """Cosine similarity of each pair of tasks' gradients on `shared` (no embedding tables):
    'a|b' -> cos. Empty when nothing is shared or there is one task."""
    if len(tasks) < 2 or not shared:
        return {}
    C = cosines(jacobian([losses[t] for t in tasks], list(shared))).tolist()
    return {f"{a}|{b}": C[i][j] for i, a in enumerate(tasks) for j, b in enumerate(tasks)
            if i < j and math.isfinite(C[i][j])}


def gradient_conflict(model: nn.Module, shared: Sequence[nn.Parameter], batches: Iterable[dict],
                      losses: Callable[[dict], dict[str, Tensor]], tasks: list[str],
                      probes: int = PROBE_BATCHES) -> dict[str, float]:
    """`conflict` averaged over the first `probes` batches, the model in eval mode (so
    measuring changes no batch-norm statistics); 'a|b' -> mean cosine."""
    if len(tasks) < 2:
        return {}
    was = model.training
    model.eval()
    found: dict[str, list[float]] = {}
    try:
        for batch in islice(batches, probes):
            for pair, cos in conflict(shared, losses(batch), tasks).items():
                found.setdefault(pair, []).append(cos)
    finally:
        model.train(was)
    return {pair: sum(v) / len(v) for pair, v in found.items()}
