"""How each embedding table is sharded over the ranks under TorchRec, from the spec: the
rule of docs/scaling.md ("Embedding tables larger than one machine") by size, a table's
`shard=` where the spec sets one, then TorchRec's planner to place the shards on ranks.

Sizes count what a table holds while training with a fused optimizer: its weights and the
optimizer's state (row-wise Adagrad 4 bytes a row, Adagrad the table again, SGD nothing); no
gradient buffer, since FBGEMM applies the update inside the backward pass.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ...language import registry as reg
from ...language.ir import Spec
from ...model.torchrec_tables import Layout, quiet, torchrec_names

MACHINE_BYTES = 64 * 2**30  # the memory of one process's machine (docs/scaling.md)
SHARDINGS = ("data_parallel", "table_wise", "row_wise", "table_row_wise", "column_wise")
COLUMN_WISE_DIM = 128  # a larger table this wide is split by columns (fewer rows per lookup)


def table_bytes(rows: int, dim: int, optimizer: str) -> int:
    """A table's training memory under a fused optimizer: float32 weights plus its state."""
    state = reg.ROW_OPTIMIZERS[optimizer]  # float32 slots per weight and per row
    return 4 * rows * (dim * (1 + state.per_weight) + state.per_row)


def by_size(rows: int, dim: int, optimizer: str, budget: int = MACHINE_BYTES) -> str:
    """The sharding a table's size calls for with `budget` bytes per process: replicated
    under 1/64 of it (cheapest to read; its gradient is all-reduced whole), whole on one rank
    up to half of it, else split. Split by columns only where that keeps the arithmetic:
    row-wise Adagrad keeps one state per row and shard, so a column shard's state would be
    the mean over its own columns only (docs/scaling.md); its tables split by rows."""
    size = table_bytes(rows, dim, optimizer)
    if size * 64 <= budget:
        return "data_parallel"
    if size * 2 <= budget:
        return "table_wise"
    if dim >= COLUMN_WISE_DIM and optimizer != "rowwise_adagrad":
        return "column_wise"
    return "row_wise"


def shardings(spec: Spec, layout: Layout, optimizer: str, budget: int = MACHINE_BYTES
              ) -> dict[str, str]:
    """Owner table -> its sharding type: the owner's `shard=` when the spec sets one, else
    by size."""
    chosen = {}
    for owner, (rows, dim) in layout.tables.items():
        wanted = spec.node(owner).params.shard
        chosen[owner] = wanted if wanted != "auto" else by_size(rows, dim, optimizer, budget)
    return chosen


@functools.cache
def _sharder_class() -> type:
    """`EmbeddingBagCollectionSharder` offering row-wise sharding on CPU too: the stock one
    offers it for CUDA only, though FBGEMM's CPU kernels run it (tested: one process's
    result to 1e-7). `sharding_types` is the sharder's public override point."""
    trc = torchrec_names()

    class RowWiseSharder(trc.EmbeddingBagCollectionSharder):
        """The stock sharder, with row-wise and table-row-wise on every device."""

        def sharding_types(self, compute_device_type: str) -> list[str]:
            types = super().sharding_types(compute_device_type)
            return types + [t.value for t in (trc.ShardingType.ROW_WISE,
                                              trc.ShardingType.TABLE_ROW_WISE)
                            if t.value not in types]

    return RowWiseSharder


def sharder(fused_params: dict) -> nn.Module:
    """The sharder of the tables, with the fused optimizer's FBGEMM parameters."""
    return _sharder_class()(fused_params=fused_params)


def plan(holder: nn.Module, types: dict[str, str], world: int, device: torch.device,
         shards: nn.Module, pg, budget: int = MACHINE_BYTES):
    """TorchRec's sharding plan of `holder.ebc` over `world` ranks: each table restricted to
    its sharding type (and to FBGEMM's fused kernel, or the dense one where replicated), the
    planner placing the shards within `budget` bytes of host memory per rank. Every rank
    computes it and rank 0's is kept (`collective_plan`)."""
    trc = torchrec_names()
    topology = trc.TopologyFactory.create_topology(
        trainer_config=trc.TrainerConfig(world_size=world, local_world_size=world,
                                         ddr_cap_bytes=budget),
        kernel_config=trc.KernelConfig(compute_device="cuda" if device.type == "cuda"
                                       else "cpu"))
    constraints = {t: trc.ParameterConstraints(
        sharding_types=[s], compute_kernels=["dense" if s == "data_parallel" else "fused"])
        for t, s in types.items()}
    planner = trc.EmbeddingShardingPlanner(
        topology=topology, constraints=constraints, debug=False,
        storage_reservation=trc.FixedPercentageStorageReservation(0.1))
    with quiet():
        return planner.collective_plan(holder, [shards], pg)
