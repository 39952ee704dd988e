"""Distributed training throughput: 1 process x T threads against N processes x T/N threads.

The workload is bench/bench_mmoe.py's default model (26 sparse x 16 + 13 dense, 8 experts
[256, 128], towers [64], 2 binary tasks) on random batches. Every configuration runs the
training loop's step through mtl_dsl.training.distributed (per-rank batch B/N, global-mean
losses, one gradient all-reduce), so it measures what `mtl compile --train --nproc N` does
per step; data preparation, validation and checkpoints are left out. Reported: global
samples/s (median over rounds), peak memory per rank, and the communication per step
(bytes and seconds, from distributed.COMM), for fixed weights and for one gradient
method (upgrad, which also all-reduces the K x n Jacobian on the shared parameters).

    python bench/bench_distributed.py                       # B=2048, 1x2 vs 2x1
    python bench/bench_distributed.py --weighting upgrad --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mmoe import default_spec, make_batches, vocab_sizes  # noqa: E402
from mtl_dsl.api import check_text  # noqa: E402
from mtl_dsl.language.overrides import with_weighting  # noqa: E402
from mtl_dsl.language.graph import TaskGraph  # noqa: E402
from mtl_dsl.model.compiler import compile_model  # noqa: E402
from mtl_dsl.training import distributed  # noqa: E402
from mtl_dsl.training.groups import ParamGroups  # noqa: E402
from mtl_dsl.training.weighting.methods import make  # noqa: E402
from mtl_dsl.training.metrics import task_loss  # noqa: E402


def _worker(rank: int, world: int, port: int, args: dict, out: str) -> None:
    """One rank: timed rounds of training steps on its shard of each global batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(args["threads"])
    if world > 1:
        dist.init_process_group("gloo")
    group = distributed.Group.start("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        spec = check_text(default_spec(Path(tmp)), "bench.mtl").raise_for_errors().spec
    if args["weighting"] != "fixed":
        spec = with_weighting(spec, args["weighting"])
    torch.manual_seed(0)
    vocab = vocab_sizes(spec)
    model = compile_model(spec, TaskGraph(spec), vocab)
    scheme = make(spec)
    scheme.attach(ParamGroups.of(model, TaskGraph(spec)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    batches = [dict(x, **{f"label:{k}": v for k, v in y.items()})
               for x, y in make_batches(spec, vocab, args["batch"], count=4)]
    mine = list(distributed.shard(batches, group.rank, group.world))  # this rank's slices

    def step(batch) -> None:
        out = model(batch)
        losses = {t.name: task_loss(t.kind, out[t.name], batch[f"label:{t.name}"])
                  for t in spec.supervised}
        losses = group.losses(losses, batch)
        opt.zero_grad(set_to_none=True)
        scheme.step(losses, {}).backward()
        group.average_grads(model)
        opt.step()

    for b in mine[:2]:
        step(b)  # warm-up
    rates, comm = [], []
    for r in range(args["rounds"]):
        before = dict(distributed.COMM)
        t0 = time.perf_counter()
        for i in range(args["steps"]):
            step(mine[i % len(mine)])
        seconds = time.perf_counter() - t0
        rates.append(args["steps"] * args["batch"] / seconds)
        comm.append({k: (distributed.COMM[k] - before[k]) / args["steps"] for k in before})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"rank": rank, "samples_per_s": statistics.median(rates), "peak_mb": peak_mb,
              "comm_bytes_per_step": statistics.median(c["bytes"] for c in comm),
              "comm_s_per_step": statistics.median(c["seconds"] for c in comm),
              "step_s": args["batch"] / statistics.median(rates)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    group.stop()
    if world > 1:
        dist.destroy_process_group()


def run(world: int, threads: int, args: argparse.Namespace) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        opts = {"threads": threads, "batch": args.batch, "steps": args.steps,
                "rounds": args.rounds, "weighting": args.weighting}
        mp.spawn(_worker, args=(world, port, opts, out), nprocs=world, join=True)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2048, help="the global batch")
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cores", type=int, default=2, help="threads x processes")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--weighting", default="fixed", help="fixed, or a method such as upgrad")
    args = ap.parse_args(argv)
    print(f"weighting {args.weighting}, global batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} rounds, {os.cpu_count()} cores")
    for world in (1, args.nproc):
        ranks = run(world, max(1, args.cores // world), args)
        r0 = ranks[0]
        print(f"{world} process x {max(1, args.cores // world)} thread: "
              f"{r0['samples_per_s']:,.0f} samples/s  step {r0['step_s'] * 1e3:.1f} ms  "
              f"peak {max(r['peak_mb'] for r in ranks):.0f} MB per rank  comm/step "
              f"{r0['comm_bytes_per_step'] / 1e6:.2f} MB in {r0['comm_s_per_step'] * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
