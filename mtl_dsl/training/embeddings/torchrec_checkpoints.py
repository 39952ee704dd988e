"""The TorchRec engine's tables on disk and back (docs/scaling.md): a resumable state that any
number of processes and any plan can load, and the full tables for checkpoint.pt and export.

* **Resumable state** (`save_tables`, `load_tables`): torch.distributed.checkpoint (DCP) of
  every table and its optimizer state, each rank writing and reading its own shards only (no
  rank ever holds a table it does not own). The names are the engine's own, one per table
  (`TABLE.weight`, `TABLE.state`), not TorchRec's: TorchRec names a sharded table's state
  `TABLE.momentum1`, a fused one-process table's `TABLE.weight.momentum_1` and a replicated
  table's `sum`, so its own names would not carry a table from one plan, or one process count,
  to another. DCP reshards on load: 2 ranks to 1, table-wise to row-wise. Without a process
  group it reads and writes everything in this process.
* **Full tables** (`full_tables`): rank 0 assembles each table shard by shard (one shard's
  buffer at a time beside the table), for checkpoint.pt and the exports, which hold the
  plain module (model/torchrec_tables.py `plain_embeddings`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...model.blocks import Embeddings
from ...model.torchrec_tables import plain_embeddings, quiet
from .torchrec_engine import TorchRecEngine


def table_state(engine: TorchRecEngine) -> dict[str, Tensor]:
    """Table -> weight and optimizer state under the engine's portable names; the values are
    the live tensors (sharded where the tables are), so DCP loads in place."""
    weights = engine.tables.ebc.state_dict()
    out: dict[str, Tensor] = {}
    for owner in engine.tables.layout.tables:
        key = f"embedding_bags.{owner}.weight"
        out[f"{owner}.weight"] = weights[key]
        state = _optimizer_state(engine, owner, key)
        if state is not None:
            out[f"{owner}.state"] = state
    return out


def _optimizer_state(engine: TorchRecEngine, owner: str, key: str) -> Tensor | None:
    """A table's optimizer state: FBGEMM's first state tensor (row-wise Adagrad's (rows,),
    Adagrad's (rows, dim)); a replicated table's dense twin's `sum` (made with the optimizer),
    row-wise Adagrad's (rows, 1) seen as (rows,)."""
    if key in engine.replicated:
        sums = engine.dense_tables.state[engine.replicated[key]].get("sum")
        if sums is None or engine.optimizer.name != "rowwise_adagrad":
            return sums
        return sums.view(-1)
    for states in engine.fused.state_dict()["state"].values():
        for name, tensor in states.items():
            if name.startswith(f"{owner}.") and "momentum" in name:
                return tensor
    return None


def save_tables(engine: TorchRecEngine, path: str | Path) -> None:
    """Every table and its optimizer state into the folder `path` (each rank its shards)."""
    import torch.distributed.checkpoint as dcp

    with quiet(), _intended():
        dcp.save(table_state(engine), checkpoint_id=str(path))


def load_tables(engine: TorchRecEngine, path: str | Path) -> None:
    """The tables and optimizer state `save_tables` wrote, under any plan or process count:
    each rank reads the rows of its own shards, in place."""
    import torch.distributed.checkpoint as dcp

    with quiet(), _intended():
        dcp.load(table_state(engine), checkpoint_id=str(path))


@contextmanager
def _intended() -> Iterator[None]:
    """DCP warns that it saves or loads in one process when there is no process group, which
    is what a one-process run means, and that it overwrites an earlier save, which is what a
    newer state of the same run means."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        warnings.filterwarnings("ignore", "Detected an existing checkpoint", UserWarning)
        yield


def full_tables(engine: TorchRecEngine, dst: int = 0, copy: bool = True) -> dict[str, Tensor]:
    """Owner -> its full table on rank `dst` (an empty dict on the others; every rank must
    call it). Sharded tables come shard by shard: each owner rank sends its shard, `dst`
    copies it into place, so `dst` holds one shard's buffer beside the table at a time.
    `copy=False` hands an unsharded table as a view of the engine's own weights, for a caller
    that copies it before training goes on (no third copy of a large table)."""
    with quiet():  # ShardedTensor's deprecation warning
        return _full_tables(engine, dst, copy)


def _full_tables(engine: TorchRecEngine, dst: int, copy: bool) -> dict[str, Tensor]:
    weights = engine.tables.ebc.state_dict()
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    out = {}
    for owner in engine.tables.layout.tables:
        w = weights[f"embedding_bags.{owner}.weight"]
        if not hasattr(w, "local_shards"):  # one process, or a replicated table
            if rank == dst:
                out[owner] = w.detach().clone() if copy else w.detach()
            continue
        full = torch.empty(w.size(), dtype=w.dtype) if rank == dst else None
        local = {tuple(s.metadata.shard_offsets): s.tensor for s in w.local_shards()}
        for meta in w.metadata().shards_metadata:
            _move_shard(meta, local, full, rank, dst)
        if full is not None:
            out[owner] = full
    return out


def _move_shard(meta, local: dict, full: Tensor | None, rank: int, dst: int) -> None:
    """One shard from its owner to `dst`'s full table (a copy when `dst` owns it)."""
    offsets, sizes = meta.shard_offsets, meta.shard_sizes
    owner = meta.placement.rank()
    if rank == owner and rank != dst:
        dist.send(local[tuple(offsets)].contiguous(), dst)
    if rank != dst:
        return
    part = local[tuple(offsets)] if owner == dst else torch.empty(sizes, dtype=full.dtype)
    if owner != dst:
        dist.recv(part, owner)
    full[offsets[0]:offsets[0] + sizes[0], offsets[1]:offsets[1] + sizes[1]] = part


def native_embeddings(engine: TorchRecEngine, dst: int = 0) -> Embeddings | None:
    """The plain `Embeddings` (model/blocks.py) holding the full tables, on rank `dst` (None
    on the others): what checkpoint.pt and the exports hold, so that predict, ONNX and
    torch.export see the module a native run gives."""
    full = full_tables(engine, dst, copy=False)  # plain_embeddings copies them
    return plain_embeddings(engine.model.calls["embeddings"], full) if full else None


def native_state(folder: Path, state: dict[str, Tensor], model: nn.Module
                 ) -> dict[str, Tensor]:
    """A checkpoint's state dict (the dense part; the TorchRec engine's tables are in
    `folder`) with the full tables under the native model's keys, for `model` (a compiled
    model with plain `Embeddings`) in one process: what predict, eval and export load. Needs
    neither TorchRec nor a process group: DCP reads every shard here."""
    import torch.distributed.checkpoint as dcp

    emb = model.embeddings
    full = {f"{o}.weight": torch.empty(rows, emb.dim_of[o]) for o, rows in emb.vocab.items()}
    with quiet(), _intended():
        dcp.load(full, checkpoint_id=str(folder), no_dist=True)
    tables = {o: full[f"{o}.weight"] for o in emb.vocab}
    plain = plain_embeddings(model.calls["embeddings"], tables)
    return {**state, **{f"embeddings.{k}": v for k, v in plain.state_dict().items()}}
