"""The embedding tables' training memory and where each table goes, from the spec alone.

The one statement of the rule (docs/scaling.md, "Embedding tables"): `mtl check` reports it,
and training places the tables by it (training/embeddings/engine.py). A table holds its weights
(rows x dim float32) and its optimizer's state, counted from the registry's facts
(`reg.ROW_OPTIMIZERS`: floats per weight and per row; `embedding_optimizer=dense`: a
full-size gradient and the dense optimizer's slots); a table whose gradient must be dense
(`dense_gradients`: MAML, a gradient method over the tables) also holds a full-size gradient.

Tables of one dim are one tensor (model/blocks.py `Embeddings`), so they are placed together,
as a block (`d16`). When the blocks and the dense part fit a process's memory budget (`train
memory=`, else the machine's memory over the processes it runs), every block is replicated in
every process. Otherwise every block over 1/64 of the budget is sharded by rows over the
processes (rank r holds the rows whose global index is r modulo their count) and the others
stay replicated; `Placement.processes` is the fewest processes that fits. No torch here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from . import registry as reg
from .graph import TaskGraph, embedding_node, table_of
from .ir import Spec
from .size import TRAIN_BYTES_PER_PARAM, model_size

SMALL_BLOCK = 64  # a block under 1/64 of the budget stays replicated (cheapest to read)


@dataclass(frozen=True)
class TableMemory:
    """One embedding table's training memory, in bytes."""

    table: str  # the owner feature
    block: str  # its dim block, `d16`
    rows: int
    dim: int
    weights: int
    state: int  # the optimizer's state (and a dense gradient, where there is one)

    @property
    def bytes(self) -> int:
        return self.weights + self.state


@dataclass(frozen=True)
class Placement:
    """Where the blocks go: `sharded` blocks row-wise over the processes, the rest replicated;
    `processes`: the fewest that fits the budget (0: none does: the replicated part alone is
    over it)."""

    budget: int
    sharded: tuple[str, ...]
    processes: int
    replicated_bytes: int  # per process: the dense part and the replicated blocks
    sharded_bytes: int  # in all, over the processes

    def per_process(self, world: int) -> int:
        return self.replicated_bytes + math.ceil(self.sharded_bytes / max(world, 1))

    def where(self, block: str, world: int) -> str:
        """`replicated` or `row-wise over N`."""
        return f"row-wise over {max(world, self.processes)}" if block in self.sharded \
            else "replicated"


def dense_gradients(spec: Spec, tg: TaskGraph) -> str | None:
    """Why the tables' gradients must be dense (full-size, every step), or None: MAML adapts
    every parameter, a gradient method with `embeddings=true` balances the tables' gradients,
    GradNorm reads the gradient of the last shared layer when that is a table."""
    w, p = spec.weighting, spec.train.params
    if p.embedding_optimizer == "dense":
        return "embedding_optimizer=dense"
    if p.meta == "maml":
        return "meta=maml adapts every parameter"
    params = w.params
    if getattr(params, "family", "loss") == "gradient" and params.on == "parameters" \
            and params.embeddings:
        return f"weighting {w.kind}(embeddings=true) balances the tables' gradients"
    if w.kind == "gradnorm" and any(tg.kind(n) == "embedding" for n in tg.last_shared):
        return "gradnorm's last shared layer is an embedding table"
    return None


def slots(spec: Spec, dense: bool) -> tuple[int, int]:
    """(float32 values per weight, per row) a table holds beyond its weights while training."""
    p = spec.train.params
    if p.embedding_optimizer == "dense":
        return 1 + reg.DENSE_OPTIMIZER_SLOTS[p.optimizer], 0
    fact = reg.ROW_OPTIMIZERS[p.embedding_optimizer]
    return fact.per_weight + int(dense), fact.per_row


def used_tables(spec: Spec, tg: TaskGraph) -> list[str]:
    """The owners of the tables some task reads, in spec order (what the compiler builds)."""
    read = {n for n, tasks in tg.tasks_of.items() if tasks}
    return [f.name for f in spec.features if f.embedded and table_of(spec, f) == f.name
            and embedding_node(f.name) in read]


def table_memory(spec: Spec, tg: TaskGraph, vocab: dict[str, int] | None = None
                 ) -> list[TableMemory]:
    """Each used table's memory; a `vocab=auto` table needs its rows in `vocab` (the fitted
    encoders') and is left out without them."""
    index = {f.name: f for f in spec.features}
    per_weight, per_row = slots(spec, dense_gradients(spec, tg) is not None)
    out = []
    for name in used_tables(spec, tg):
        p = index[name].params
        rows = (vocab or {}).get(name) or p.table_rows()
        if rows is None:
            continue
        dim = p.dim or reg.DEFAULT_EMBEDDING_DIM
        out.append(TableMemory(name, f"d{dim}", rows, dim, 4 * rows * dim,
                               4 * (rows * dim * per_weight + rows * per_row)))
    return out


def placement(tables: list[TableMemory], budget: int, dense_bytes: int = 0) -> Placement:
    """Replicate everything when it fits `budget`; else shard the blocks over 1/64 of it."""
    blocks: dict[str, int] = {}
    for t in tables:
        blocks[t.block] = blocks.get(t.block, 0) + t.bytes
    if dense_bytes + sum(blocks.values()) <= budget:
        return Placement(budget, (), 1, dense_bytes + sum(blocks.values()), 0)
    sharded = tuple(b for b, n in blocks.items() if n * SMALL_BLOCK > budget)
    rest = dense_bytes + sum(n for b, n in blocks.items() if b not in sharded)
    big = sum(blocks[b] for b in sharded)
    room = budget - rest
    processes = max(2, math.ceil(big / room)) if room > 0 else 0
    return Placement(budget, sharded, processes, rest, big)


def dense_bytes(spec: Spec, tg: TaskGraph) -> int:
    """The dense part's training memory: language/size.py's estimate without the tables."""
    index = {f.name: f for f in spec.features}
    tables = sum((index[n].params.table_rows() or 0) *
                 (index[n].params.dim or reg.DEFAULT_EMBEDDING_DIM) for n in used_tables(spec, tg))
    return max(0, model_size(spec, tg).training_bytes - TRAIN_BYTES_PER_PARAM * tables)


def plan(spec: Spec, tg: TaskGraph, vocab: dict[str, int] | None, budget: int
         ) -> tuple[list[TableMemory], Placement]:
    """Every used table's memory and their placement under `budget` bytes a process."""
    tables = table_memory(spec, tg, vocab)
    return tables, placement(tables, budget, dense_bytes(spec, tg))


def machine_bytes(processes: int = 1) -> int:
    """The machine's physical memory over the `processes` that share it (the default
    budget)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return total // max(processes, 1)


def budget_bytes(spec: Spec, processes: int = 1) -> int:
    """`train memory=` in bytes, else `machine_bytes(processes)`."""
    gb = spec.train.params.memory
    return int(gb * 1e9) if gb is not None else machine_bytes(processes)


def describe(tables: list[TableMemory], where: Placement, world: int = 1, shown: int = 5
             ) -> list[str]:
    """`mtl check`'s lines: each table (the largest `shown`, then the rest summed) with its
    optimizer state and where it goes, and the processes the placement needs."""
    ordered = sorted(tables, key=lambda t: -t.bytes)
    lines = [f"table {t.table}: {t.rows:,} x {t.dim}, {size_text(t.bytes)} with its optimizer "
             f"state ({size_text(t.weights)} weights): {where.where(t.block, world)}"
             for t in ordered[:shown]]
    rest = ordered[shown:]
    if rest:
        lines.append(f"... {len(rest)} smaller tables, {size_text(sum(t.bytes for t in rest))}")
    if where.sharded:
        need = f"at least {where.processes} processes" if where.processes else \
            "more than any number of processes: the replicated part alone is over it"
        lines.append(f"tables over the memory budget of {size_text(where.budget)} a process: "
                     f"they need {need}")
    return lines


def size_text(n: int) -> str:
    """`1.25 GB` from 100 MB up, else `12.3 MB`."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
