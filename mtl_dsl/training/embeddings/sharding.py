"""Embedding tables sharded by rows over the processes, natively (docs/scaling.md).

When the tables do not fit a process's memory budget (language/memory.py `placement`), each
large dim block is split by rows: rank r of W holds the rows whose global index g has
g % W == r, at local index g // W, with their optimizer state; nobody holds the whole block.
A lookup (`read`) takes the unique rows it touches, sends each id to its owner
(`all_to_all_single`: counts, then ids), the owners answer with the rows, and the answers
become a leaf tensor the model reads; after the backward pass each leaf's gradient goes back
to the owners the same way, is summed per row and divided by W, and each owner applies the
row optimizer to its rows. Every rank runs the same lookups in the same order (training,
validation, the probe), so the collectives pair up. Small blocks stay replicated and are
exchanged as training/embeddings/row_sources.py does.

A sharded block starts from normal(0, 1) rows drawn per span of `SPAN` rows from a generator
seeded by the run's seed, the block and the span, so its initial rows do not depend on the
number of processes (they differ from a one-process run's). Its rows and state are written
beside resume.pt and checkpoint.pt, one file per rank (`save`), read back by any number of
processes (`load`: each takes its rows from the memory-mapped files), and `assembled` joins
them into whole tables for a one-process model (`load_checkpoint`: predict, export).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...language.ir import Spec
from ...language.memory import Placement
from ..distributed import collective
from .row_optimizers import Block, coalesce
from .row_sources import LocalRows, gather_rows, squared
from ..state import atomic_save, fill

SPAN = 1 << 16  # rows drawn from one generator when a shard is initialised


class ShardedRows(LocalRows):
    """Row-wise shards of the placement's large blocks; the other blocks replicated."""

    def __init__(self, spec: Spec, emb: nn.Module, group, where: Placement):
        super().__init__(spec, emb, group)
        self.sharded = tuple(k for k in where.sharded if k in emb.tables)
        self.world, self.rank = group.world, group.rank
        self.total = {k: _block_rows(emb, k) for k in self.sharded}
        kind, seed = spec.train.params.embedding_optimizer, torch.initial_seed()
        for key in self.sharded:
            shard = _initial(self.total[key], emb.tables[key].embedding_dim, key, seed,
                             self.rank, self.world)
            self.blocks[key] = Block(key, shard, kind)
        self.routes: dict[str, list[tuple]] = {k: [] for k in self.sharded}

    def read(self, key: str, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The rows `rows` touch, fetched from their owners (a leaf while gradients are
        taken), and indices into them."""
        if key not in self.sharded:
            return super().read(key, rows)
        unique, inverse = torch.unique(rows, return_inverse=True)  # sorted
        owner = unique % self.world
        order = torch.argsort(owner, stable=True)
        sent = torch.bincount(owner, minlength=self.world)
        got = self._exchange(sent, torch.empty_like(sent), "the rows' counts")
        ids = self._exchange(unique[order], unique.new_empty(int(got.sum())), "ids", sent, got)
        local = ids // self.world
        table = self.blocks[key].table
        answer = self._exchange(table.index_select(0, local),
                                table.new_empty(len(unique), table.shape[1]), "rows", got, sent)
        fetched = torch.empty_like(answer)
        fetched[order] = answer  # (U, d) in `unique` order
        if torch.is_grad_enabled():
            fetched.requires_grad_()
            self.routes[key].append((order, sent, got, local, fetched))
        return fetched, inverse

    def _exchange(self, out: Tensor, into: Tensor, what: str, sent: Tensor | None = None,
                  got: Tensor | None = None) -> Tensor:
        """all_to_all_single of `out` (split by `sent` per rank) into `into` (by `got`)."""
        splits = (None, None) if sent is None else (got.tolist(), sent.tolist())
        collective(f"exchange the sharded tables' {what}", out.numel() * out.element_size(),
                   lambda: dist.all_to_all_single(into, out, splits[0], splits[1]))
        return into

    def begin(self) -> None:
        super().begin()
        for found in self.routes.values():
            found.clear()

    def gradients(self) -> None:
        """Replicated blocks as LocalRows; each sharded block's leaf gradients sent to the
        owners of their rows, summed per row and divided by the ranks."""
        super().gradients()
        for key in self.sharded:
            rows, grads = [], []
            for order, sent, got, local, leaf in self.routes[key]:
                g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                grads.append(self._exchange(g[order], g.new_empty(len(local), g.shape[1]),
                                            "gradients", sent, got))
                rows.append(local)
            self.routes[key].clear()
            block = self.blocks[key]
            block.rows = block.grad = None
            if rows and sum(len(r) for r in rows):
                block.rows, grad = coalesce(torch.cat(rows), torch.cat(grads))
                block.grad = grad / self.world

    def sq_norm(self) -> float:
        """The replicated blocks' share (the same everywhere) and every rank's shards'."""
        mine = torch.tensor([squared({k: b for k, b in self.blocks.items()
                                      if k in self.sharded})], dtype=torch.float64)
        collective("sum the shards' gradient norms", 8, lambda: dist.all_reduce(mine))
        rest = squared({k: b for k, b in self.blocks.items() if k not in self.sharded})
        return rest + float(mine)

    def save(self, path: Path) -> dict:
        """This rank's rows and state, beside `path`; what loading needs (every rank's)."""
        name = lambda r: f"{path.stem}.tables.{r}-of-{self.world}.pt"  # noqa: E731
        atomic_save({k: {"table": self.blocks[k].table, "slots": self.blocks[k].slots}
                     for k in self.sharded}, path.parent / name(self.rank))
        return {"world": self.world, "files": [name(r) for r in range(self.world)],
                "rows": dict(self.total)}

    def load(self, path: Path, saved: dict | None) -> None:
        """This rank's rows (and their state, where saved) from files any number of
        processes wrote."""
        if saved is None:
            return
        for key in self.sharded:
            block = self.blocks[key]
            mine = torch.arange(self.rank, self.total[key], self.world)  # global rows
            fill(block.table, _rows_of(path.parent, saved, key, "table", mine))
            for slot, value in block.slots.items():
                fill(value, _rows_of(path.parent, saved, key, slot, mine))

    def describe(self) -> dict:
        return {"tables": {k: f"row-wise over {self.world}" if k in self.sharded else
                           "replicated" for k in self.blocks}, "rows": "touched"}


def _block_rows(emb: nn.Module, key: str) -> int:
    """A dim block's global rows: the sum of its tables'."""
    return sum(n for owner, n in emb.vocab.items() if f"d{emb.dim_of[owner]}" == key)


def _initial(rows: int, dim: int, key: str, seed: int, rank: int, world: int) -> Tensor:
    """This rank's initial rows of a block: normal(0, 1) per span of SPAN rows, each span
    from its own generator, so the rows are the same for any number of processes."""
    out = torch.empty((rows - rank + world - 1) // world, dim)  # (rows held, d)
    for start in range(0, rows, SPAN):
        n = min(SPAN, rows - start)
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(
            f"{key}:{start}".encode())) % 2**63)
        span = torch.empty(n, dim).normal_(generator=g)  # (n, d)
        first = (rank - start) % world  # the span's first row this rank holds
        held = span[first::world]  # rows start + first + world j: local (start + first) // W + j
        lo = (start + first) // world
        out[lo:lo + len(held)] = held
    return out


def _rows_of(folder: Path, saved: dict, key: str, slot: str, rows: Tensor) -> Tensor:
    """The saved values of global `rows` of a block (its table or a state slot), from the
    files of the `saved` layout (W' ranks, row g in file g % W' at g // W'), mapped."""
    world = saved["world"]
    parts = [torch.load(folder / f, mmap=True, weights_only=True)[key] for f in saved["files"]]
    first = parts[0]["table"] if slot == "table" else parts[0]["slots"][slot]
    out = first.new_empty((len(rows), *first.shape[1:]))
    for r, part in enumerate(parts):
        held = part["table"] if slot == "table" else part["slots"][slot]
        pick = (rows % world == r).nonzero().squeeze(1)
        out[pick] = held.index_select(0, rows[pick] // world)
    return out


def assembled(path: Path, saved: dict, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` (a checkpoint's state_dict) with each sharded block's whole table, joined
    from the files beside `path`, for a model in one process."""
    out = dict(state)
    for key, rows in saved["rows"].items():
        out[f"embeddings.tables.{key}.weight"] = _rows_of(path.parent, saved, key, "table",
                                                          torch.arange(rows))
    return out
