"""Where a step's table rows come from when every process holds whole tables.

:class:`LocalRows` is the default (docs/scaling.md, "Embedding tables"): the model reads its
rows through `read` (model/blocks.py `Embeddings.weights`), which hands each lookup a small
leaf tensor of the unique rows it touches, `table[unique(rows)]` (U, d), instead of the
table; after the backward pass the leaves hold the gradient of exactly those rows. Nothing
of the table's size is allocated per step, and the table itself takes no gradient
(requires_grad=False): the row optimizer updates it. Across ranks the touched rows and their
gradients are all-gathered (ids and rows, never the table), summed per row and divided by
the ranks, the same on every rank, so each applies the same update.

:class:`FullGradients` is for what needs the tables' full gradient (MAML, a gradient method
over the tables, GradNorm on a table: language/memory.py `dense_gradients`): the tables stay
trainable, their dense gradients are all-reduced with the model's, and the row optimizer
takes the rows whose gradient is not zero.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...language.ir import Spec
from ..distributed import collective
from .row_optimizers import Block, coalesce


def _blocks(spec: Spec, emb: nn.Module) -> dict[str, Block]:
    return {key: Block(key, table.weight.data, spec.train.params.embedding_optimizer)
            for key, table in emb.tables.items()}


class LocalRows:
    """Replicated tables, read as per-lookup leaves of their touched rows."""

    reads, sharded = True, ()

    def __init__(self, spec: Spec, emb: nn.Module, group):
        self.group = group
        self.owned = tuple(t.weight for t in emb.tables.values())
        for w in self.owned:
            w.requires_grad_(False)  # the engine updates it; the model reads leaves
        self.blocks = _blocks(spec, emb)
        self.leaves: dict[str, list[tuple[Tensor, Tensor]]] = {k: [] for k in self.blocks}

    def read(self, key: str, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(the rows `rows` touch, as a leaf; indices into it), or the table when no
        gradient is taken (evaluation)."""
        table = self.blocks[key].table
        if not torch.is_grad_enabled():
            return table, rows
        unique, inverse = torch.unique(rows, return_inverse=True)
        leaf = table.index_select(0, unique).requires_grad_()  # (U, d)
        self.leaves[key].append((unique, leaf))
        return leaf, inverse

    def begin(self) -> None:
        for found in self.leaves.values():
            found.clear()

    def gradients(self) -> None:
        """Each block's touched rows and their gradient, global over the ranks."""
        local = {}
        for key, found in self.leaves.items():
            parts = [(u, leaf.grad) for u, leaf in found if leaf.grad is not None]
            if parts:
                local[key] = coalesce(torch.cat([u for u, _ in parts]),
                                      torch.cat([g for _, g in parts]))
            found.clear()
        if self.group.world > 1:
            local = gather_rows(local, self.blocks, self.group.world)
        for key, block in self.blocks.items():
            block.rows, block.grad = local.get(key, (None, None))

    def sq_norm(self) -> float:
        return squared(self.blocks)

    def save(self, path: Path) -> dict | None:
        return None  # the model's state_dict holds the tables

    def load(self, path: Path, saved: dict | None) -> None:
        return None

    def describe(self) -> dict:
        return {"tables": "replicated", "rows": "touched"}


def gather_rows(local: dict[str, tuple[Tensor, Tensor]], blocks: dict[str, Block],
                world: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Every rank's (rows, gradient) per block, summed per row and divided by `world`: three
    all-gathers (the counts, the ids, the gradients flat), whatever the number of blocks."""
    keys = list(blocks)
    like = next(iter(blocks.values())).table
    counts = torch.tensor([len(local[k][0]) if k in local else 0 for k in keys])
    every = [torch.empty_like(counts) for _ in range(world)]
    collective("gather the touched rows' counts", counts.numel() * 8 * (world - 1),
                lambda: dist.all_gather(every, counts))
    table = torch.stack(every)  # (world, K)
    ids_len = int(table.sum(1).max())
    widths = torch.tensor([blocks[k].table.shape[1] for k in keys])
    flat_len = int((table * widths).sum(1).max())
    ids = torch.zeros(ids_len, dtype=torch.long)
    flat = like.new_zeros(flat_len)
    i = j = 0
    for k in keys:
        if k in local:
            rows, grad = local[k]
            ids[i:i + len(rows)], flat[j:j + grad.numel()] = rows, grad.reshape(-1)
            i, j = i + len(rows), j + grad.numel()
    all_ids = [torch.empty_like(ids) for _ in range(world)]
    all_flat = [torch.empty_like(flat) for _ in range(world)]
    collective("gather the touched rows", ids.numel() * 8 * (world - 1),
                lambda: dist.all_gather(all_ids, ids))
    collective("gather the touched rows' gradients", flat.numel() * 4 * (world - 1),
                lambda: dist.all_gather(all_flat, flat))
    out = {}
    for b, k in enumerate(keys):
        d, parts_r, parts_g = int(widths[b]), [], []
        for r in range(world):
            i0 = int(table[r, :b].sum())
            j0 = int((table[r, :b] * widths[:b]).sum())
            n = int(table[r, b])
            parts_r.append(all_ids[r][i0:i0 + n])
            parts_g.append(all_flat[r][j0:j0 + n * d].view(n, d))
        if sum(len(p) for p in parts_r):
            rows, grad = coalesce(torch.cat(parts_r), torch.cat(parts_g))
            out[k] = rows, grad / world
    return out


def squared(blocks: dict[str, Block]) -> float:
    """The squared L2 norm of the blocks' step gradients (in float64)."""
    return sum(float(b.grad.double().pow(2).sum()) for b in blocks.values()
               if b.grad is not None)


class FullGradients:
    """Trainable tables with dense gradients (all-reduced with the model's); the row
    optimizer updates the rows whose gradient is not zero."""

    reads, sharded = False, ()

    def __init__(self, spec: Spec, emb: nn.Module):
        self.params = {key: t.weight for key, t in emb.tables.items()}
        self.owned = tuple(self.params.values())
        self.blocks = _blocks(spec, emb)

    def read(self, key: str, rows: Tensor) -> tuple[Tensor, Tensor]:
        raise RuntimeError("FullGradients does not read rows")  # never installed

    def begin(self) -> None:
        for w in self.owned:
            w.grad = None

    def gradients(self) -> None:
        for key, block in self.blocks.items():
            g = self.params[key].grad
            if g is None:
                block.rows = block.grad = None
                continue
            rows = (g != 0).any(1).nonzero().squeeze(1)  # (U,)
            block.rows, block.grad = rows, g.index_select(0, rows)

    def sq_norm(self) -> float:
        return squared(self.blocks)

    def save(self, path: Path) -> dict | None:
        return None

    def load(self, path: Path, saved: dict | None) -> None:
        return None

    def describe(self) -> dict:
        return {"tables": "replicated", "rows": "nonzero gradient"}
