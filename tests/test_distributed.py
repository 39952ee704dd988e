"""Distributed training on CPU (gloo, 2 processes): the same result as one process.

Two processes with batch B/2 each see exactly the global batches of one process with
batch B (mtl_dsl/training/distributed.py), so after the same steps the weights agree up to
summation order, for fixed weights, a loss-based method (uncertainty) and a gradient
method (upgrad, which needs the task gradients averaged before aggregation). A distributed
run resumes; a rank that stops answering ends the others with a clear error (E706), not a
hang; `mtl compile --train --nproc 2` end to end reports the one-process metrics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT
from mtl_dsl.api import check_file
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.training.callbacks import Callback
from mtl_dsl.training.distributed import COMM, TIMEOUT_ENV
from mtl_dsl.training.loop import train

MMOE = (ROOT / "specs" / "mmoe.mtl").read_text()
TRAIN = "train epochs=2 batch=64 lr=3e-3 seed=7 monitor=a.mse patience=5"
ROWS = 900  # the training split is not a multiple of 64: the last batch is ragged
TIMEOUT = 20  # seconds a rank waits at a collective (patient enough for a loaded machine)


def spec_file(folder, train: str = TRAIN, rows: int = ROWS) -> str:
    """specs/mmoe.mtl, smaller (ROWS rows, 2 epochs)."""
    text = MMOE.replace("rows=20000", f"rows={rows}")
    text = "\n".join(train if line.startswith("train ") else line for line in text.splitlines())
    path = folder / "mmoe.mtl"
    path.write_text(text + "\n")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stall(Callback):
    """Rank 1 stops answering after two steps (a stuck or dead worker)."""

    def on_batch(self, run) -> None:
        while run.dist.rank == 1 and run.step == 2 and run.signals.pending is None:
            time.sleep(0.05)  # until spawn ends it (SIGTERM) once rank 0 has failed


def _worker(rank: int, world: int, port: int, jobs: list[dict], out: str) -> None:
    """One rank: train each job in turn (one import of torch for all), writing each job's
    final weights, or its error, to `out`. A job with `resume` goes on with the run folder
    of the job it names."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # one process group for every job (train() joins a group it finds, and leaves it open);
    # its timeout is how long the stalled job's rank 0 waits before E706
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT))
    os.environ[TIMEOUT_ENV] = str(TIMEOUT)
    run_dirs: list[str] = []
    for i, job in enumerate(jobs):
        checked = check_file(job["path"], None, job.get("weighting")).raise_for_errors()
        resume = run_dirs[job["resume"]] if "resume" in job else None
        sent = COMM["bytes"]
        try:
            result = train(checked.spec, checked.graph, out_dir=out, progress=False,
                           device="cpu", resume=resume, epochs=job.get("epochs"),
                           callbacks=[Stall()] if job.get("stall") else None)
        except MtlError as err:
            with open(f"{out}/error{i}-{rank}.txt", "w") as f:
                f.write(err.render())
            raise  # spawn then ends the other ranks
        dist.barrier()  # rank 0 has written the run folder's last files
        run_dirs.append(str(result.run_dir))
        torch.save({"weights": result.model.state_dict(), "val": result.best_metrics,
                    "run_dir": str(result.run_dir), "sent": COMM["bytes"] - sent,
                    "steps": result.history[-1]["step"]}, f"{out}/job{i}-{rank}.pt")


def spawn(jobs: list[dict], out, world: int = 2) -> list[list[dict]]:
    """Each job's results on each rank (ranks that raised have none)."""
    out.mkdir(exist_ok=True)
    mp.spawn(_worker, args=(world, free_port(), jobs, str(out)), nprocs=world, join=True)
    return [[torch.load(out / f"job{i}-{r}.pt", weights_only=False) for r in range(world)
             if (out / f"job{i}-{r}.pt").exists()] for i in range(len(jobs))]


def one_process(path: str, out, weighting: str | None = None) -> dict:
    checked = check_file(path, None, weighting).raise_for_errors()
    result = train(checked.spec, checked.graph, out_dir=out, progress=False, device="cpu")
    return {"weights": result.model.state_dict(), "val": result.best_metrics,
            "run_dir": str(result.run_dir)}


def assert_same(a: dict, b: dict, tol: float = 1e-4) -> None:
    for k, v in a["weights"].items():
        torch.testing.assert_close(b["weights"][k], v, rtol=tol, atol=tol, msg=k)
    for task, metrics in a["val"].items():
        for name, value in metrics.items():
            assert b["val"][task][name] == pytest.approx(value, rel=1e-3), (task, name)


WEIGHTINGS = ("fixed", "uncertainty", "gradnorm", "upgrad", "upgrad(on=representation)")
W = len(WEIGHTINGS)  # the first job after the weightings (JOBS below)


def stream_spec(folder) -> str:
    """A Parquet folder of 3 files streamed through a shuffle buffer (docs/data.md)."""
    rng = np.random.default_rng(1)
    n = 1200
    click = (rng.random(n) < 0.3).astype(np.int64)
    table = pa.table({"city": rng.choice(["a", "b", "c"], n), "age": rng.normal(40, 10, n),
                      "click": click, "buy": click & (rng.random(n) < 0.5)})
    (folder / "train").mkdir(parents=True)
    for i in range(3):
        pq.write_table(table.slice(i * 400, 400), folder / "train" / f"p{i}.parquet")
    pq.write_table(table.slice(0, 200), folder / "val.parquet")
    (folder / "s.mtl").write_text(
        'model m\ndata parquet(train="train", val="val.parquet", stream=true, buffer=150)\n'
        "feature city = sparse(dim=4)\nfeature age = dense(norm=standard)\n"
        "label click, buy\ninput x = concat(city, age)\nexperts bottom = mlp(x, 8)\n"
        "tower t1 = mlp(bottom, 4)\ntower t2 = mlp(bottom, 4)\n"
        "task ctr: binary(label=click) from t1\ntask cvr: binary(label=buy) from t2\n"
        "train epochs=2 batch=64 lr=1e-2 seed=2\n")
    return str(folder / "s.mtl")


def stream_spec_1_epoch(folder) -> str:
    """The streamed spec for 1 epoch (on the same files)."""
    path = folder / "s1.mtl"
    path.write_text((folder / "s.mtl").read_text().replace("epochs=2", "epochs=1"))
    return str(path)


ESMM = (ROOT / "specs" / "esmm.mtl").read_text()
SPARSE = "train epochs=2 batch=64 lr=3e-3 seed=7 clip=0.5"
HASHED = 20000  # buckets of the sparse spec's user and item tables: 2 x 1.28 MB


def sparse_spec(folder, train: str = SPARSE, name: str = "esmm.mtl") -> str:
    """specs/esmm.mtl on 900 rows, its user and item tables hashed into HASHED buckets."""
    text = ESMM.replace("rows=50000", "rows=900")
    for f in ("user", "item"):
        text = text.replace(f"feature {f} = sparse(dim=16)",
                            f"feature {f} = sparse(hash={HASHED}, dim=16)")
    text = "\n".join(train if line.startswith("train ") else line for line in text.splitlines())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text + "\n")
    return str(folder / name)


ROWWISE = SPARSE + " embedding_optimizer=rowwise_adagrad embedding_lr=0.05"
DENSE_TABLES = SPARSE + " embedding_optimizer=dense"  # today's: Adam, gradients all-reduced
SHARDED = SPARSE + " memory=0.005"  # 5 MB a process: the 7.7 MB d16 block is sharded
# the jobs after the weightings, by name (the stalled job last: it ends the spawn)
JOBS = ("short", "short_resumed", "stream", "stream_short", "stream_resumed", "other_count",
        "empty_shard", "maml", "sparse", "rowwise", "dense_tables", "sharded",
        "sharded_short", "sharded_resumed", "stall")
J = {name: W + i for i, name in enumerate(JOBS)}
EMPTY_SHARD = TRAIN.replace("epochs=2 batch=64", "epochs=1 batch=719")  # 720 rows: 719 + 1
MAML = TRAIN + " meta=maml inner_steps=2"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One spawn of 2 ranks for every test (one start-up of torch): the weightings, a run of
    1 epoch resumed for 2, a stream (2 epochs; 1 epoch resumed for 2), a run of 1 epoch that
    one process resumes, a last batch of one row, MAML, and last a run in which rank 1
    stalls."""
    tmp = tmp_path_factory.mktemp("dist")
    path = spec_file(tmp)
    for sub in ("short", "other", "empty", "maml"):
        (tmp / sub).mkdir()
    short = spec_file(tmp / "short", TRAIN.replace("epochs=2", "epochs=1"))
    stream = stream_spec(tmp / "stream")
    jobs = [{"path": path, "weighting": w} for w in WEIGHTINGS]
    jobs += [{"path": short}, {"path": short, "resume": J["short"], "epochs": 2}]
    jobs += [{"path": stream}, {"path": stream_spec_1_epoch(tmp / "stream")},
             {"path": stream, "resume": J["stream_short"], "epochs": 2}]
    jobs += [{"path": spec_file(tmp / "other", TRAIN.replace("epochs=2", "epochs=1"))}]
    jobs += [{"path": spec_file(tmp / "empty", EMPTY_SHARD), "weighting": "fixed"}]
    jobs += [{"path": spec_file(tmp / "maml", MAML), "weighting": "fixed"}]
    jobs += [{"path": sparse_spec(tmp / "sparse")},
             {"path": sparse_spec(tmp / "rowwise", ROWWISE), "weighting": "uncertainty"},
             {"path": sparse_spec(tmp / "dense_tables", DENSE_TABLES)},
             {"path": sparse_spec(tmp / "sharded", SHARDED)},
             {"path": sparse_spec(tmp / "sharded", SHARDED.replace("epochs=2", "epochs=1"),
                                  "short.mtl")},
             {"path": str(tmp / "sharded" / "esmm.mtl"), "resume": J["sharded_short"],
              "epochs": 2}]
    jobs += [{"path": path, "stall": True}]
    assert len(jobs) == W + len(JOBS)
    t0 = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="E706"):  # the stalled job
        spawn(jobs, tmp / "two")
    results = [[torch.load(tmp / "two" / f"job{i}-{r}.pt", weights_only=False)
                for r in range(2)] for i in range(len(jobs) - 1)]
    return tmp, path, results, time.perf_counter() - t0


@pytest.fixture(scope="module")
def alone(two_ranks) -> dict:
    """The spec as it is (uncertainty weighting, 2 epochs) in one process."""
    tmp, path, _, _ = two_ranks
    return one_process(path, tmp / "one")


@pytest.mark.parametrize("i", range(len(WEIGHTINGS)), ids=WEIGHTINGS)
def test_two_processes_train_as_one(two_ranks, i):
    """Per-rank batch B/2 on 2 ranks == batch B on one, after every step of 2 epochs:
    fixed weights, a loss-based method with parameters of its own, GradNorm (gradient norms
    of the global batch), a gradient method on the shared parameters (Jacobians averaged)
    and on the shared outputs (Jacobians gathered side by side)."""
    tmp, path, results, _ = two_ranks
    ranks = results[i]
    alone = one_process(path, tmp / "one", WEIGHTINGS[i])
    assert len(ranks) == 2
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"]  # rank 0 named it for both
    assert_same(alone, ranks[0])
    for k, v in ranks[0]["weights"].items():  # the ranks never drift apart
        torch.testing.assert_close(ranks[1]["weights"][k], v, rtol=0, atol=0)
    run = ranks[0]["run_dir"]
    records = (tmp / "two" / os.path.basename(run) / "metrics.jsonl").read_text()
    kinds = [json.loads(line)["type"] for line in records.splitlines()]
    assert kinds.count("start") == 1 and kinds.count("end") == 1  # one writer


def test_distributed_run_resumes(two_ranks, alone):
    """Stopped after 1 epoch and resumed for 2 on 2 ranks: the weights of 2 epochs at once
    (in the same run folder, with a resume record)."""
    tmp, path, results, _ = two_ranks
    first, resumed = results[J["short"]][0], results[J["short_resumed"]][0]
    assert resumed["run_dir"] == first["run_dir"]
    assert_same(alone, resumed)
    records = (tmp / "two" / os.path.basename(first["run_dir"]) / "metrics.jsonl")
    assert "resume" in [json.loads(x)["type"] for x in records.read_text().splitlines()]


def test_a_run_of_two_processes_resumes_in_one(two_ranks, alone):
    """The resumable state holds the position in the global batches: 1 epoch on 2 ranks
    resumed for 2 in one process ends with the weights of 2 epochs in one process."""
    tmp, _, results, _ = two_ranks
    run = tmp / "two" / os.path.basename(results[J["other_count"]][0]["run_dir"])
    checked = check_file(str(tmp / "other" / "mmoe.mtl"), None, None).raise_for_errors()
    result = train(checked.spec, checked.graph, progress=False, device="cpu", resume=run,
                   epochs=2)
    assert_same(alone, {"weights": result.model.state_dict(), "val": result.best_metrics})


def test_a_rank_with_an_empty_shard_of_the_last_batch(two_ranks):
    """720 training rows in batches of 719: the last batch has one row, so rank 0's shard
    of it is empty; the step still matches one process's (rank 0 contributes zero)."""
    tmp, _, results, _ = two_ranks
    alone = one_process(str(tmp / "empty" / "mmoe.mtl"), tmp / "one", "fixed")
    assert_same(alone, results[J["empty_shard"]][0])
    records = (tmp / "two" / os.path.basename(results[J["empty_shard"]][0]["run_dir"])
               / "metrics.jsonl").read_text().splitlines()
    assert max(json.loads(x).get("step", 0) for x in records) == 2  # 719 rows, then 1


def test_maml_on_two_ranks_adapts_as_one_process(two_ranks):
    """meta=maml: every rank adapts on the global batch's support rows (gathered) and
    scores its slice of the query rows: the weights of one process."""
    tmp, _, results, _ = two_ranks
    alone = one_process(str(tmp / "maml" / "mmoe.mtl"), tmp / "one", "fixed")
    ranks = results[J["maml"]]
    assert_same(alone, ranks[0])
    for k, v in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][k], v, rtol=0, atol=0)


@pytest.mark.parametrize("job", ["sparse", "rowwise", "dense_tables"])
def test_touched_rows_on_two_ranks_train_as_one(two_ranks, job):
    """Replicated tables, their touched rows exchanged (ids and row gradients all-gathered,
    summed per row, divided by the ranks): lazy Adam with clip=, row-wise Adagrad under
    uncertainty weighting; 2 ranks give one process's weights, as dense tables do."""
    tmp, _, results, _ = two_ranks
    ranks = results[J[job]]
    alone = one_process(str(tmp / job / "esmm.mtl"), tmp / "one",
                        "uncertainty" if job == "rowwise" else None)
    assert_same(alone, ranks[0])
    for k, v in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][k], v, rtol=0, atol=0)


def test_touched_rows_send_no_table_gradient(two_ranks):
    """The same run sends, per step, both tables' gradients (2 x 1.28 MB) fewer bytes with
    the rows exchanged than with the dense tables' gradients all-reduced."""
    _, _, results, _ = two_ranks
    rows, dense = results[J["sparse"]][0], results[J["dense_tables"]][0]
    assert rows["steps"] == dense["steps"] == 24
    saved = (dense["sent"] - rows["sent"]) / rows["steps"]
    assert saved > 0.95 * 2 * (HASHED + 1) * 16 * 4


def test_tables_over_the_memory_budget_train_sharded_on_two_ranks(two_ranks, tmp_path):
    """memory=5 MB: the d16 block (7.7 MB with lazy Adam's state) goes row-wise over the 2
    ranks, each holding half its rows; the run learns, the ranks hold the same dense
    weights, and checkpoint.pt with its two shard files loads whole in one process."""
    from mtl_dsl.training.checkpoints import load_checkpoint

    tmp, _, results, _ = two_ranks
    ranks = results[J["sharded"]]
    run = tmp / "two" / os.path.basename(ranks[0]["run_dir"])
    for k, v in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][k], v, rtol=0, atol=0)
    assert ranks[0]["weights"]["embeddings.tables.d16.weight"].shape == (0, 16)  # held apart
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["tables"]["tables"] == {"d16": "row-wise over 2", "d8": "replicated"}
    epochs = [r for r in records if r["type"] == "epoch"]
    assert epochs[-1]["val"]["ctr"]["loss"] < epochs[0]["val"]["ctr"]["loss"]
    shards = [torch.load(run / f"checkpoint.tables.{r}-of-2.pt", weights_only=True)["d16"]
              for r in range(2)]
    assert [len(s["table"]) for s in shards] == [HASHED + 1, HASHED + 1]  # 40,002 rows / 2
    whole = load_checkpoint(run / "checkpoint.pt").model.embeddings.tables["d16"].weight
    assert torch.equal(whole[0::2], shards[0]["table"]) and \
        torch.equal(whole[1::2], shards[1]["table"])


def _shard_steps(rank: int, world: int, port: int, folder: str) -> None:
    """Steps of ESMM with its d16 block sharded row-wise over `world` ranks (or, with world
    1, replicated: the reference), from the same weights on the same global batches; each
    rank writes its weights and its shard, then saves and reloads the shard files."""
    from mtl_dsl.language.memory import Placement
    from mtl_dsl.model.compiler import compile_model
    from mtl_dsl.training.distributed import Group
    from mtl_dsl.training.embeddings.engine import RowEngine
    from mtl_dsl.training.metrics import task_loss
    from mtl_dsl.training.optim import clip_gradients, make_optimizer
    from mtl_dsl.training.embeddings.row_sources import LocalRows
    from mtl_dsl.training.embeddings.sharding import ShardedRows
    from mtl_dsl.training.weighting.methods import make

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    group = Group.start("cpu")
    checked = check_file(sparse_spec(Path(folder), SPARSE, "s.mtl")).raise_for_errors()
    spec = checked.spec
    torch.manual_seed(0)
    model = compile_model(spec, checked.graph, {"category": 5})
    full = model.embeddings.tables["d16"].weight.detach().clone()  # the same on every rank
    if world > 1:
        backend = ShardedRows(spec, model.embeddings, group, Placement(1, ("d16",), 2, 0, 0))
    else:
        backend = LocalRows(spec, model.embeddings, group)
    engine = RowEngine(spec, backend, model, None)
    if world > 1:
        engine.blocks["d16"].table.copy_(full[rank::world])
    scheme = make(spec)
    optimizer = make_optimizer(spec, model, scheme, skip=engine.owned())
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        batch = {"user": torch.randint(0, HASHED + 1, (32,), generator=g),
                 "item": torch.randint(0, HASHED + 1, (32,), generator=g),
                 "category": torch.randint(0, 5, (32,), generator=g),
                 "d": torch.randn(32, 4, generator=g),
                 "label:ctr": torch.randint(0, 2, (32,), generator=g).float(),
                 "label:ctcvr": torch.randint(0, 2, (32,), generator=g).float()}
        mine = {k: v[rank * 32 // world:(rank + 1) * 32 // world] for k, v in batch.items()}
        engine.begin()
        out = model(mine)
        losses = group.losses({t: task_loss("binary", out[t], mine[f"label:{t}"])
                               for t in ("ctr", "ctcvr")}, mine)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        group.average_grads(model)
        engine.exchange()
        clip_gradients(spec, model, engine)
        optimizer.step()
        engine.step(1.0)
    table = engine.blocks["d16"].table
    saved = engine.save_tables(Path(folder) / f"w{world}.pt")
    torch.save({"weights": model.state_dict(), "table": table.clone(), "saved": saved,
                "initial": full}, f"{folder}/shard{world}-{rank}.pt")
    table.zero_()
    engine.load_tables(Path(folder) / f"w{world}.pt", saved)  # read back from the files
    assert world == 1 or torch.equal(table, torch.load(f"{folder}/shard{world}-{rank}.pt",
                                                       weights_only=False)["table"])
    group.stop()


def test_row_wise_shards_train_as_one_process(tmp_path):
    """The native row-wise sharding (ids to their owners and rows back by all-to-all, the
    gradients to the owners, summed and divided by the ranks): 4 steps of lazy Adam with
    clip= on 2 ranks from the same weights give one process's weights, to summation order;
    the shard files join into that table and reload into the shards."""
    from mtl_dsl.training.embeddings.sharding import assembled

    mp.spawn(_shard_steps, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    mp.spawn(_shard_steps, args=(1, free_port(), str(tmp_path)), nprocs=1, join=True)
    alone = torch.load(tmp_path / "shard1-0.pt", weights_only=False)
    ranks = [torch.load(tmp_path / f"shard2-{r}.pt", weights_only=False) for r in range(2)]
    whole = assembled(tmp_path / "w2.pt", ranks[0]["saved"], {})["embeddings.tables.d16.weight"]
    torch.testing.assert_close(whole, alone["table"], rtol=1e-5, atol=1e-6)
    moved = (alone["table"] != alone["initial"]).any(1).sum()
    assert 100 < moved < 300  # the rows the 4 batches touched, of 40,002
    for k, v in alone["weights"].items():
        if k != "embeddings.tables.d16.weight":
            torch.testing.assert_close(ranks[0]["weights"][k], v, rtol=1e-5, atol=1e-6,
                                       msg=k)
            assert torch.equal(ranks[1]["weights"][k], ranks[0]["weights"][k])


def test_a_sharded_run_resumes_from_its_shard_files(two_ranks):
    """1 epoch with the d16 block sharded, resumed for 2 from resume.pt and each rank's
    shard file: the weights of the 2-epoch run, every shard row with them."""
    tmp, _, results, _ = two_ranks
    whole, resumed = results[J["sharded"]], results[J["sharded_resumed"]]
    assert resumed[0]["run_dir"] == results[J["sharded_short"]][0]["run_dir"]
    for rank in range(2):
        assert_same(whole[rank], resumed[rank], tol=1e-6)
    runs = [tmp / "two" / os.path.basename(r[0]["run_dir"]) for r in (whole, resumed)]
    shards = [[torch.load(run / f"checkpoint.tables.{r}-of-2.pt", weights_only=True)["d16"]
               for r in range(2)] for run in runs]
    for a, b in zip(*shards):
        torch.testing.assert_close(a["table"], b["table"], rtol=1e-6, atol=1e-6)


def test_one_process_refuses_tables_over_its_budget_and_says_how_many_it_needs(tmp_path):
    """The sharded spec in one process: E707 at `memory=`, exit 1, the count to use."""
    path = sparse_spec(tmp_path, SHARDED)
    done = subprocess.run([sys.executable, "-m", "mtl_dsl", "compile", path, "--train",
                           "--out", str(tmp_path / "runs")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stderr
    assert "error[E707]" in done.stderr and "--nproc 2" in done.stderr
    assert "memory=0.005" in done.stderr and "Traceback" not in done.stderr


def streamed(folder, groups: int | None = None):
    """The streamed spec's training rows (a StreamSet) as one process prepares them; with
    `groups`, its files rewritten in row groups of that many rows first."""
    from mtl_dsl.data.prepare import prepare

    spec = check_file(stream_spec(folder), None, None).raise_for_errors().spec
    for f in (folder / "train").iterdir() if groups else ():
        pq.write_table(pq.read_table(f), f, row_group_size=groups)
    return prepare(spec, None, spec.train.params.seed).train


@pytest.mark.parametrize("groups", [None, 70], ids=["one-group-per-file", "row-groups"])
def test_a_partitioned_stream_reads_every_row_once_per_epoch(tmp_path, groups):
    """2 ranks read disjoint units (halves of each file's one row group, or whole row
    groups of 70 rows: 18 units, uneven), `batch`/2 rows a step; the rows both ranks see in
    an epoch are exactly the training rows, once each, and both take the same steps (the
    rank that runs out takes empty shards)."""
    data = streamed(tmp_path, groups)
    every = torch.cat([b["age"].reshape(-1) for b in data.batches(64, shuffle=False)])
    assert len(every) == len(data) > 0
    steps, seen = data.steps(64, 2), []
    for epoch in range(2):
        g = torch.Generator()
        per_rank = []
        for rank in range(2):
            g.manual_seed(epoch)  # the shared generator, the same on every rank
            batches = list(data.rank_batches(64, g, rank, 2))
            assert len(batches) == steps  # epochs end together
            assert all(len(b["age"]) <= 32 for b in batches)
            per_rank.append(torch.cat([b["age"].reshape(-1) for b in batches]))
        rows = torch.cat(per_rank)
        assert torch.equal(rows.sort().values, every.sort().values)  # each row once
        seen.append(per_rank[0])
    assert not torch.equal(seen[0], seen[1])  # each epoch in another order
    assert sum(len(p) for p in data.partition(2)) == (18 if groups else 6)


def test_a_stream_resumed_mid_epoch_with_another_process_count_is_refused(tmp_path):
    """The partition depends on the process count: a streamed run stopped mid-epoch by 2
    processes does not go on in one (E705, with the count to use); at an epoch end it
    may, and in-memory data always may."""
    from mtl_dsl.training.distributed import Group
    from mtl_dsl.training.resume import ResumeError

    data, one = streamed(tmp_path), Group(0, 1, torch.device("cpu"))
    with pytest.raises(ResumeError, match="2 process") as err:
        one.resumable({"world": 2, "batch": 3}, data, tmp_path)
    assert err.value.diagnostics[0].code == "E705"
    assert "--nproc 2" in err.value.render()
    one.resumable({"world": 2, "batch": 0}, data, tmp_path)  # at an epoch's end
    one.resumable({"world": 1, "batch": 3}, data, tmp_path)


def test_a_streamed_parquet_source_trains_partitioned_and_resumes(two_ranks):
    """Streamed on 2 ranks, each reading its own partition: the ranks hold the same weights,
    the model learns (validation loss below the untrained one), and a run stopped after 1
    epoch and resumed for 2 ends with the weights of the run of 2 epochs at once. (Not the
    one-process weights: the partition changes the order of the rows, docs/scaling.md.)"""
    tmp, _, results, _ = two_ranks
    ranks = results[J["stream"]]
    for k, v in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][k], v, rtol=0, atol=0)
    assert_same(ranks[0], results[J["stream_resumed"]][0], tol=1e-6)
    records = [json.loads(x) for x in (tmp / "two" / os.path.basename(ranks[0]["run_dir"])
                                        / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert epochs[-1]["val"]["ctr"]["loss"] < epochs[0]["val"]["ctr"]["loss"]
    # 1200 rows, 600 a rank in batches of 32: 19 steps an epoch, as one process's ceil(1200/64)
    assert [r["step"] for r in epochs] == [0, 19, 38]


def test_a_rank_that_stops_answering_ends_the_run_with_an_error(two_ranks):
    """Rank 1 stalls after 2 steps: rank 0 stops after the collective timeout with E706 (and
    spawn then ends rank 1), not a hang."""
    tmp, _, _, seconds = two_ranks
    error = (tmp / "two" / f"error{J['stall']}-0.txt").read_text()
    assert "E706" in error and "rank 0" in error and f"{TIMEOUT_ENV}={TIMEOUT}" in error
    assert not (tmp / "two" / f"job{J['stall']}-0.pt").exists()
    assert seconds < 600  # everything in the spawn, the stall's TIMEOUT included


def test_cli_nproc_2_reports_the_one_process_metrics(two_ranks, alone):
    """`mtl compile --train --nproc 2` through the elastic launcher: rank 0 prints the
    summary once, with the one-process metrics (1e-3 relative)."""
    tmp, path, _, _ = two_ranks
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mtl_dsl", "compile", path, "--train",
                           "--quiet", "--json", "--device", "cpu", "--nproc", "2",
                           "--out", str(tmp / "cli")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    two = json.loads(done.stdout)  # one JSON document: rank 1 printed nothing
    assert len(list((tmp / "cli").iterdir())) == 1
    for task, metrics in alone["val"].items():
        for name, value in metrics.items():
            assert two["val"][task][name] == pytest.approx(value, rel=1e-3), (task, name)


@pytest.mark.parametrize("args,message", [
    (["--nproc", "2"], "--nproc needs --train"),
    (["--train", "--device", "tpu"], "use cpu or cuda"),
] + ([] if torch.cuda.is_available() else [(["--train", "--device", "cuda"], "no CUDA")]))
def test_usage_errors_of_the_distributed_options(args, message):
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    done = CliRunner().invoke(app, ["compile", str(ROOT / "specs" / "mmoe.mtl"), *args])
    assert done.exit_code == 2 and message in done.output


class Dtypes(Callback):
    """The dtypes the model's linear layers compute in during training steps."""

    def __init__(self):
        self.seen: set[torch.dtype] = set()

    def on_start(self, run, first, total) -> None:
        for m in run.model.modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_hook(
                    lambda mod, args, out: self.seen.add(out.dtype) if mod.training else None)


def test_bf16_autocast_trains_with_float32_weights(tmp_path):
    """`train precision=bf16`: the training forward pass computes in bfloat16 (CPU
    autocast), the loss still falls, the weights stay float32; validation runs in float32."""
    path = spec_file(tmp_path, TRAIN + " precision=bf16", rows=600)
    checked = check_file(path, None, "fixed").raise_for_errors()
    watch = Dtypes()
    result = train(checked.spec, checked.graph, out_dir=tmp_path / "runs", progress=False,
                   device="cpu", callbacks=[watch])
    assert watch.seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    val = [r["val"]["a"]["loss"] for r in result.history]
    assert val[-1] < val[0]
    assert "precision=bf16" in (result.run_dir / "spec.mtl").read_text()


def test_a_streamed_batch_smaller_than_the_process_count_is_an_error():
    """Each rank's share of the global batch: the shares add up to it, none is empty."""
    from mtl_dsl.data.streaming import rank_size

    assert [rank_size(7, r, 3) for r in range(3)] == [2, 2, 3]
    with pytest.raises(MtlError, match=r"batch \(batch=1\) cannot be split over 2") as err:
        rank_size(1, 0, 2)
    assert err.value.diagnostics[0].code == "E706"
