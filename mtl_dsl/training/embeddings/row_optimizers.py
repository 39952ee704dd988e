"""The embedding optimizers: one update of the rows a step touched, the other rows untouched.

Every function takes a table (rows, d), its state slots, the touched rows (U,) (unique) and
their gradient (U, d), already summed over the batch's occurrences and averaged over ranks,
and updates those rows in place; the cost is O(U d), not O(rows d). docs/language.md
("Embedding tables") states the formulas; the registry (`reg.ROW_OPTIMIZERS`) holds each
one's state per weight and per row, which `state` allocates and the memory estimate
(language/memory.py) counts.

`embedding_l2` adds l2 * w_r to a touched row's gradient first (L2, as FBGEMM's
`WeightDecayMode.L2` does): rows a step does not touch do not decay.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...language import registry as reg

BETAS = (0.9, 0.999)  # lazy Adam's, torch.optim.Adam's defaults


def state(kind: str, table: Tensor) -> dict[str, Tensor]:
    """Zeroed state slots of optimizer `kind` for `table` (rows, d): per weight (`m`, `v`,
    `sum`) or per row (`row_sum`, (rows,))."""
    fact = reg.ROW_OPTIMIZERS[kind]
    names = {"lazy_adam": ("m", "v"), "adagrad": ("sum",)}.get(kind, ())
    slots = {n: torch.zeros_like(table) for n in names[:fact.per_weight]}
    if fact.per_row:
        slots["row_sum"] = table.new_zeros(table.shape[0])
    return slots


@torch.no_grad()
def update(kind: str, table: Tensor, slots: dict[str, Tensor], rows: Tensor, grad: Tensor,
           lr: float, step: int, l2: float = 0.0) -> None:
    """One step of optimizer `kind` on `rows` of `table`; `step` counts this table's steps
    from 1 (lazy Adam's bias correction: the global step, as torch's SparseAdam and
    TensorFlow's LazyAdam take it)."""
    if not len(rows):
        return
    w = table.index_select(0, rows)  # (U, d)
    g = grad + l2 * w if l2 else grad  # (U, d)
    eps = reg.ROW_OPTIMIZERS[kind].eps
    if kind == "sgd":
        w -= lr * g
    elif kind == "rowwise_adagrad":
        G = slots["row_sum"].index_select(0, rows) + g.pow(2).mean(1)  # (U,)
        slots["row_sum"].index_copy_(0, rows, G)
        w -= lr * g / (G.sqrt() + eps)[:, None]
    elif kind == "adagrad":
        s = slots["sum"].index_select(0, rows).addcmul_(g, g)  # (U, d)
        slots["sum"].index_copy_(0, rows, s)
        w -= lr * g / (s.sqrt() + eps)
    else:
        _lazy_adam(w, slots, rows, g, lr, step, eps)
    table.index_copy_(0, rows, w)


def _lazy_adam(w: Tensor, slots: dict[str, Tensor], rows: Tensor, g: Tensor, lr: float,
               step: int, eps: float) -> None:
    """Adam's update on the touched rows, in torch.optim.Adam's arithmetic: a table whose
    every row is touched every step follows dense Adam (tests/test_embedding_engine.py)."""
    b1, b2 = BETAS
    m = slots["m"].index_select(0, rows).lerp_(g, 1 - b1)  # (U, d)
    v = slots["v"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)  # (U, d)
    slots["m"].index_copy_(0, rows, m)
    slots["v"].index_copy_(0, rows, v)
    c1, c2 = 1 - b1 ** step, 1 - b2 ** step
    denom = (v.sqrt() / math.sqrt(c2)).add_(eps)
    w.addcdiv_(m, denom, value=-lr / c1)


def coalesce(rows: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """(unique rows, sorted; the sum of each one's gradient rows) of (N,) rows and (N, d)
    gradients that may repeat rows."""
    unique, inverse = torch.unique(rows, return_inverse=True)
    out = grad.new_zeros(len(unique), grad.shape[1])  # (U, d)
    out.index_add_(0, inverse, grad)
    return unique, out


class Block:
    """One dim block's rows held by this process, the optimizer's state over them, and this
    step's touched rows (indices into `table`) with their global gradient."""

    def __init__(self, key: str, table: Tensor, kind: str):
        self.key, self.table = key, table  # (rows held, d)
        self.slots = state(kind, table)
        self.rows: Tensor | None = None  # (U,) local indices, unique
        self.grad: Tensor | None = None  # (U, d)
