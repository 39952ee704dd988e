"""The embedding engine: how a training step reads, exchanges and updates the tables.

The training loop asks one object, made once by :func:`make_engine`, everything it needs
of the tables (the seam another engine plugs into, docs/scaling.md "Embedding tables"):

* `owned()`: the table parameters the dense optimizer must leave alone (the engine's);
* `begin(lr_factor)` before a step's forward (the step's rate over `lr`: TorchRec applies
  it inside the backward pass); `exchange()` after its backward and the dense
  gradients' all-reduce: each table's gradient of the step, global over the ranks;
* `sq_norm()` and `scale(f)`: the tables' share of the global gradient norm, for `clip=`;
* `step(lr_factor)`: the update, at `embedding_lr` times the schedule's factor;
* `state_dict()` / `load_state_dict()`: the optimizer's state, in resume.pt;
* `save_tables(path)` / `load_tables(path)`: tables the model's state_dict does not hold
  (sharded ones), beside a checkpoint; `describe()`: the run log's "tables" entry.

:class:`EmbeddingEngine` itself is `embedding_optimizer=dense`: the tables stay ordinary
parameters in the dense optimizer's `embeddings` group (training/optim.py), every row
updated every step. :class:`RowEngine` is the native engine of every other
`embedding_optimizer`: the rows a step touched, updated by training/embeddings/row_optimizers.py,
read through a backend that says where rows live (training/embeddings/row_sources.py: replicated
tables; training/embeddings/sharding.py: row-wise shards). TorchRec's engine
(training/embeddings/torchrec_trainer.py) answers the same methods, registered in `ENGINES` under its
`train engine=` name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ...language.diagnostics import Diagnostic, MtlError, Source
from ...language.graph import TaskGraph
from ...language.ir import Spec
from ...language.memory import (Placement, TableMemory, budget_bytes, dense_gradients, plan,
                               size_text)
from . import row_optimizers, torchrec_trainer
from .row_optimizers import Block
from ..state import fill


class EmbeddingEngine:
    """`embedding_optimizer=dense`: the tables are the dense optimizer's (nothing to do)."""

    def owned(self) -> tuple[nn.Parameter, ...]:
        return ()

    def begin(self, lr_factor: float = 1.0) -> None:
        """Before a step's forward pass; `lr_factor`: this step's rate over `lr` (TorchRec's
        fused optimizer applies it inside the backward pass)."""

    def exchange(self) -> None:
        """After the backward pass and the dense gradients' all-reduce."""

    def sq_norm(self) -> float:
        return 0.0

    def scale(self, factor: float) -> None:
        """Multiply the step's table gradients by `factor` (clipping)."""

    def step(self, lr_factor: float) -> None:
        """Update the tables; `lr_factor` is the schedule's rate over `lr`."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, saved: dict) -> None:
        """Restore `state_dict()`'s values in place."""

    def without_tables(self, state: dict) -> dict:
        """The model's state_dict for resume.pt, less the tables `state_dict()` holds."""
        return state

    def with_tables(self, state: dict) -> dict:
        """resume.pt's model entry made whole again (before `load_state_dict`)."""
        return state

    def save_tables(self, path: Path) -> dict | None:
        """Write the tables the model's state_dict lacks beside `path`; what loading needs."""
        return None

    def load_tables(self, path: Path, saved: dict | None) -> None:
        """Read back what `save_tables` wrote (`saved`: its return value)."""

    def describe(self) -> dict:
        return {"embedding_optimizer": "dense"}

    def close(self) -> None:
        """After training: the model reads and trains its tables as a plain module again."""


class RowEngine(EmbeddingEngine):
    """The native engine: a row optimizer on the rows each step touches."""

    def __init__(self, spec: Spec, backend, model: nn.Module, reason: str | None):
        p = spec.train.params
        self.kind, self.l2, self.reason = p.embedding_optimizer, p.embedding_l2, reason
        self.lr = p.embedding_lr if p.embedding_lr is not None else p.lr
        self.backend, self.steps, self.model = backend, 0, model
        self.blocks: dict[str, Block] = backend.blocks
        if backend.reads:
            model.embeddings.source = backend.read
        # the rows each replicated block has updated since the run began: resume.pt holds
        # those (the others are the initial rows, which a resumed run builds again)
        self.touched = {k: torch.zeros(len(b.table), dtype=torch.bool)
                        for k, b in self.blocks.items() if k not in backend.sharded}
        self.keys = {f"embeddings.tables.{k}.weight": k for k in self.touched}

    def owned(self) -> tuple[nn.Parameter, ...]:
        return self.backend.owned

    def begin(self, lr_factor: float = 1.0) -> None:
        self.backend.begin()

    def exchange(self) -> None:
        self.backend.gradients()

    def sq_norm(self) -> float:
        return self.backend.sq_norm()

    def scale(self, factor: float) -> None:
        for b in self.blocks.values():
            if b.grad is not None:
                b.grad.mul_(factor)

    def step(self, lr_factor: float) -> None:
        self.steps += 1
        for b in self.blocks.values():
            if b.rows is not None:
                row_optimizers.update(self.kind, b.table, b.slots, b.rows, b.grad,
                                      self.lr * lr_factor, self.steps, self.l2)
                if b.key in self.touched:
                    self.touched[b.key][b.rows] = True
            b.rows = b.grad = None

    def state_dict(self) -> dict:
        """The step count and each replicated block's updated rows with their state: a copy
        of those rows, or past half the block the live tensors (torch.save writes them
        without a copy). Untouched rows are the initial ones, which the resumed run compiles
        again from the same seed; sharded blocks are in `save_tables`' files."""
        blocks = {}
        for key, seen in self.touched.items():
            b, rows = self.blocks[key], seen.nonzero().squeeze(1)
            whole = 2 * len(rows) > len(seen)
            blocks[key] = {"rows": None if whole else rows,
                           "table": b.table if whole else b.table[rows],
                           "slots": {n: v if whole else v[rows] for n, v in b.slots.items()}}
        return {"steps": self.steps, "kind": self.kind, "blocks": blocks}

    def load_state_dict(self, saved: dict) -> None:
        if not saved:
            return
        self.steps = int(saved["steps"])
        for key, part in saved["blocks"].items():
            b, rows = self.blocks[key], part["rows"]
            for live, value in ((b.table, part["table"]),
                                *((b.slots[n], v) for n, v in part["slots"].items())):
                if rows is None:
                    fill(live, value)
                else:
                    live[rows] = value
            self.touched[key][slice(None) if rows is None else rows] = True

    def without_tables(self, state: dict) -> dict:
        return {k: v for k, v in state.items() if k not in self.keys}

    def with_tables(self, state: dict) -> dict:
        live = self.model.state_dict()
        return {**{k: live[k] for k in self.keys}, **state}

    def save_tables(self, path: Path) -> dict | None:
        return self.backend.save(path)

    def load_tables(self, path: Path, saved: dict | None) -> None:
        self.backend.load(path, saved)

    def describe(self) -> dict:
        return {"embedding_optimizer": self.kind, "embedding_lr": self.lr,
                "dense_gradients": self.reason, **self.backend.describe()}

    def close(self) -> None:
        """The model's tables back to plain trainable parameters read directly (a sharded
        block stays empty: its rows are in the checkpoint's shard files)."""
        self.model.embeddings.source = None
        for w in self.backend.owned:
            w.requires_grad_(True)


def native(spec: Spec, graph: TaskGraph, model: nn.Module, group, where: Placement
           ) -> EmbeddingEngine:
    """The native engine for `spec`: dense (today's), or rows on replicated or sharded
    tables, with dense gradients where the weighting or MAML needs them."""
    from .row_sources import FullGradients, LocalRows

    emb = getattr(model, "embeddings", None)
    if spec.train.params.embedding_optimizer == "dense" or emb is None:
        return EmbeddingEngine()
    reason = dense_gradients(spec, graph)
    if where.sharded and group.world > 1:
        from .sharding import ShardedRows

        return RowEngine(spec, ShardedRows(spec, emb, group, where), model, reason)
    backend = FullGradients(spec, emb) if reason is not None else LocalRows(spec, emb, group)
    return RowEngine(spec, backend, model, reason)


def torchrec(spec: Spec, graph: TaskGraph, model: nn.Module, group, where: Placement):
    """TorchRec's engine (E604 where it cannot take the spec), under the placement's budget."""
    if not torchrec_trainer.wanted(spec, graph, model, group.device):
        return native(spec, graph, model, group, where)  # no table at all
    return torchrec_trainer.TorchRecTables.attach(spec, model, group, where.budget)


# `train engine=` name -> the function that builds it
ENGINES: dict[str, Callable[..., EmbeddingEngine]] = {"native": native, "torchrec": torchrec}


def make_engine(spec: Spec, graph: TaskGraph, model: nn.Module, group, where: Placement
                ) -> EmbeddingEngine:
    """The engine `train engine=` asks for: `auto` is TorchRec's on a GPU where it is installed
    and takes the spec (training/embeddings/torchrec_engine.py `choose`), else the native one."""
    name = spec.train.params.engine
    if name == "auto":
        name = "torchrec" if torchrec_trainer.wanted(spec, graph, model, group.device) \
            else "native"
    return ENGINES[name](spec, graph, model, group, where)



def place(spec: Spec, graph: TaskGraph, vocab: dict[str, int], world: int) -> Placement:
    """Where this run's tables go under the memory budget (docs/scaling.md); E707 when
    `world` processes cannot hold them."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))  # processes sharing the machine
    tables, where = plan(spec, graph, vocab, budget_bytes(spec, local))
    if not where.sharded:
        return where
    reason = dense_gradients(spec, graph)
    if reason is not None:
        raise _too_large(spec, tables, where, f"tables with dense gradients ({reason}) are "
                         "not sharded", "choose a row optimizer (embedding_optimizer="
                         "lazy_adam or rowwise_adagrad) without dense table gradients")
    if where.processes == 0 or world < where.processes:
        need = f"at least {where.processes} processes with this budget each " \
            f"(--nproc {where.processes})" \
            if where.processes else "a larger budget: the rest of the model alone is over it"
        raise _too_large(spec, tables, where, f"this run has {world} process"
                         f"{'es' * (world != 1)}; the tables need {need}",
                         "train on more processes, raise train memory=, lower the tables' "
                         "rows (hash=, max_ids=), or take embedding_optimizer=rowwise_adagrad "
                         "(4 bytes of state a row)")
    return where


def _too_large(spec: Spec, tables: list[TableMemory], where: Placement, why: str, hint: str
               ) -> MtlError:
    """E707 at `train memory=` if written, else at the largest table's feature."""
    total = sum(t.bytes for t in tables)
    big = max(tables, key=lambda t: t.bytes)
    span = spec.train.arg_spans.get("memory") or \
        next(f.span for f in spec.features if f.name == big.table)
    message = (f"the embedding tables need {size_text(total)} with their optimizer state "
               f"({spec.train.params.embedding_optimizer}), over the memory budget of "
               f"{size_text(where.budget)} a process: {why}")
    return MtlError([Diagnostic("E707", message, span, hint)],
                    Source(spec.source or "", spec.path or spec.name))
