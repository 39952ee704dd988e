"""The TorchRec engine on 2 processes (gloo, CPU): DistributedModelParallel shards the tables
and the step equals one process's within 1e-6, loss and every weight, for table-wise,
row-wise, table-row-wise, data-parallel and a mixed plan (docs/scaling.md). The global batches
include a ragged one (8 and 7 rows: row-wise needs the padding to equal local batches) and an
empty bag. The tables' checkpoint written by 2 ranks under one plan resumes under another plan,
and in one process. Skipped where TorchRec is not installed (CI installs it)."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from mtl_dsl.model.torchrec_tables import installed

pytestmark = pytest.mark.skipif(not installed(), reason="TorchRec is not installed "
                                "(bash .ci/install-torchrec)")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from torchrec_cases import (BATCH, TABLE_LR, build, dense_state, global_batches,  # noqa: E402
                            spec_text, step)
from mtl_dsl.training.distributed import Group  # noqa: E402

WORLD = 2
MIXED = {"user": "row_wise", "item": "table_wise", "category": "data_parallel"}
PLANS = {"table_wise": "table_wise", "row_wise": "row_wise",
         "table_row_wise": "table_row_wise", "data_parallel": "data_parallel", "mixed": MIXED}


def engine_of(model, world: int):
    from mtl_dsl.training.embeddings.torchrec_engine import TableOptimizer, TorchRecEngine

    pg = dist.group.WORLD if world > 1 else None
    return TorchRecEngine.attach(model, TableOptimizer("rowwise_adagrad", TABLE_LR), world,
                                 pg, BATCH)


def run(shard, world: int, rank: int, batches=None, resume: str | None = None):
    """(losses, dense weights, full tables on rank 0, local rows of each table)."""
    from mtl_dsl.training.embeddings.torchrec_checkpoints import full_tables, load_tables

    _, model, data = build(spec_text(shard))
    engine = engine_of(model, world)
    if resume is not None:
        load_tables(engine, f"{resume}/tables")
        model.load_state_dict(torch.load(f"{resume}/dense.pt"), strict=False)
    group = Group(rank, world, torch.device("cpu"))
    losses = [step(model, engine, b, group) for b in batches or global_batches(data)]
    local = {o: engine.tables.rows(o).shape[0] for o in engine.tables.vocab}
    return losses, dense_state(model), full_tables(engine), local


def _worker(rank: int, port: int, out: str) -> None:
    from mtl_dsl.training.embeddings.torchrec_checkpoints import save_tables

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    for name, shard in PLANS.items():
        result = run(shard, WORLD, rank)
        torch.save(result, f"{out}/{name}-{rank}.pt")
    # a checkpoint after the first step under the mixed plan ...
    _, model, data = build(spec_text(MIXED))
    engine = engine_of(model, WORLD)
    batches = global_batches(data)
    step(model, engine, batches[0], Group(rank, WORLD, torch.device("cpu")))
    save_tables(engine, f"{out}/ck/tables")
    if rank == 0:
        torch.save(dense_state(model), f"{out}/ck/dense.pt")
    dist.barrier()
    # ... resumed under the row-wise plan
    torch.save(run("row_wise", WORLD, rank, batches[1:], f"{out}/ck"), f"{out}/resumed-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrec")
    (out / "ck").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=WORLD, join=True)
    return out


@pytest.fixture(scope="module")
def one_process():
    return run("auto", 1, 0)


def assert_same(got, want) -> None:
    losses, dense, tables, _ = got
    assert losses == pytest.approx(want[0], abs=1e-6)
    for k, v in want[1].items():
        torch.testing.assert_close(dense[k], v, atol=1e-6, rtol=0, msg=k)
    assert set(tables) == set(want[2])
    for o, w in want[2].items():
        torch.testing.assert_close(tables[o], w, atol=1e-6, rtol=0, msg=o)


@pytest.mark.parametrize("plan", list(PLANS))
def test_two_ranks_equal_one_process(ranks, one_process, plan):
    got = torch.load(ranks / f"{plan}-0.pt", weights_only=False)
    assert_same(got, one_process)
    start = build(spec_text())[1].embeddings
    moved = max(float((w - start.rows(o).detach()).abs().max()) for o, w in one_process[2].items())
    assert moved > 1e-3  # the tables did train
    shard = PLANS[plan] if isinstance(PLANS[plan], dict) else dict.fromkeys(start.vocab, plan)
    rows = {r: torch.load(ranks / f"{plan}-{r}.pt", weights_only=False)[3] for r in (0, 1)}
    for o, how in shard.items():  # each rank holds what the plan says
        held = sorted((rows[0][o], rows[1][o]))
        full = start.vocab[o]
        assert held == {"data_parallel": [full, full], "table_wise": [0, full]}.get(
            how, [full // 2, full - full // 2]), (o, how, held)


def test_a_checkpoint_resumes_under_another_plan_and_in_one_process(ranks, one_process):
    """Saved by 2 ranks under the mixed plan after one step: the last two steps under the
    row-wise plan, and in one process, are the uninterrupted run's."""
    want = (one_process[0][1:], *one_process[1:])
    assert_same(torch.load(ranks / "resumed-0.pt", weights_only=False), want)
    _, model, data = build(spec_text())
    assert_same(run("auto", 1, 0, global_batches(data)[1:], str(ranks / "ck")), want)
