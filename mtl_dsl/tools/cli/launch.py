"""`mtl compile SPEC --train --nproc N`: N training processes on this machine, started by
torch's elastic launcher (the engine behind `torchrun`).

Each worker runs the same `mtl compile SPEC --train ...` command line without `--nproc`;
torch.distributed.run gives it RANK, WORLD_SIZE, LOCAL_RANK and a rendezvous, and the
training loop shards the data by rank (:mod:`mtl_dsl.training.distributed`). On several
machines, start the same command with `torchrun --nnodes M --nproc-per-node N
--rdzv-backend c10d --rdzv-endpoint HOST:PORT -m mtl_dsl compile SPEC --train` on each
(docs/scaling.md). Rank 0 alone prints the result and writes the run folder.
"""

from __future__ import annotations

import os
import sys
import uuid


def in_worker() -> bool:
    """True inside a process that torchrun (or `--nproc`) started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that prints."""
    return os.environ.get("RANK", "0") == "0"


def launch(nproc: int, argv: list[str]) -> tuple[int, str]:
    """Run `python -m mtl_dsl ARGV` (the command without --nproc) in `nproc` local workers through the elastic launcher
    (a standalone c10d rendezvous on a free local port, no restarts); (exit code, message).
    A worker that fails makes the launcher stop the others; its rank and exit code are
    reported (the worker printed its own error)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        elastic_launch(config, sys.executable)("-m", "mtl_dsl", *argv)
    except ChildFailedError as err:
        failed = sorted(err.failures.items())
        worst = max((f.exitcode for _, f in failed), default=1)
        ranks = ", ".join(f"rank {r} (exit {f.exitcode})" for r, f in failed)
        code = worst if worst in (1, 2, 3, 130, 143) else 1
        return code, f"error: distributed training failed: {ranks}; see the errors above"
    return 0, ""
