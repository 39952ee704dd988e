"""Does a training step cost what its batch touches, or what its tables hold?

Three measurements, each case in a fresh child process whose peak memory is its own
`ru_maxrss` (from `os.wait4`), imports included (docs/benchmarks.md, "Embedding tables at
scale"):

1. **The real command** per table size N: a Parquet file of `--rows` rows (two Zipf id
   columns, `user` and `item`, two small categoricals, two dense columns, two binary labels),
   an MMoE of 4 experts over `sparse(hash=N, dim=16)` for the ids, one epoch of batch 2,048 on
   2 threads, run as `mtl compile SPEC --train`; per N and `embedding_optimizer` (the
   default, and `dense`: today's dense gradient and Adam over every row), the process's wall
   time, the epoch's time and the peak memory. A case whose tables, with their optimizer
   state, exceed `--limit-gb` is skipped ('-').
2. **A streamed funnel**: `--stream-rows` rows with `--users` users and `--items` items (Zipf),
   written in chunks to Parquet files, read with `parquet(..., stream=true)`: rows per second
   over the epoch and the peak memory.
3. **Plain-PyTorch anchors** at the same sizes, one table x dim 16, 2,048 x 2 Zipf ids a step,
   the median step time: a dense gradient with fused Adam; `sparse=True` with SparseAdam;
   the native row-wise Adagrad and lazy Adam (mtl_dsl/training/embeddings/row_optimizers.py on a leaf of
   the unique rows); FBGEMM's TBE with fused row-wise Adagrad when `fbgemm_gpu` imports, else
   '-'.

`--omp unset,passive` runs every child both with OMP_WAIT_POLICY unset and =PASSIVE (on a
shared machine OpenMP's spinning threads stall sub-millisecond steps by 10-70 ms; the policy
is set in the children only, never in the library). Every size and row count is an option,
so a test runs it tiny (tests/test_bench_scale.py):

    python bench/bench_scale.py                                   # 1e4 .. 1e8, 100k rows
    python bench/bench_scale.py --sizes 1e4,1e6 --rows 20000 --stream-rows 0 --omp passive
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SPEC = """model scale "embedding tables at scale"
data parquet("{data}", split=[0.8, 0.1, 0.1])
feature user = sparse(hash={n}, dim=16)
feature item = sparse(hash={n}, dim=16)
feature c1 = sparse(dim=4)
feature c2 = sparse(dim=4)
feature x1 = dense(norm=standard)
feature x2 = dense(norm=standard)
label click, buy
input x = concat(user, item, c1, c2, x1, x2)
experts e[4] = mlp(x, 32)
gate g_ctr = softmax(x) over e
gate g_buy = softmax(x) over e
tower t_ctr = mlp(g_ctr, 16)
tower t_buy = mlp(g_buy, 16)
task ctr: binary(label=click) from t_ctr
task buy: binary(label=buy) from t_buy
train epochs=1 batch=2048 threads=2 seed=1{extra}
"""
FUNNEL = """model funnel "a streamed funnel"
data parquet("{data}", stream=true, buffer=65536, split=[0.98, 0.01, 0.01])
feature user = sparse(hash={users}, dim=16)
feature item = sparse(hash={items}, dim=16)
feature c1 = sparse(dim=4)
feature x1 = dense(norm=standard)
label click, buy
label ctcvr_label = click & buy
input x = concat(user, item, c1, x1)
tower t_ctr = mlp(x, 64, 32)
tower t_cvr = mlp(x, 64, 32)
task ctr: binary(label=click) from t_ctr
task cvr: binary(label=buy, loss=none, where=click) from t_cvr
task ctcvr: binary(label=ctcvr_label) = ctr * cvr
train epochs=1 batch=2048 threads=2 seed=1
"""
ANCHORS = ("dense_adam", "sparse_adam", "rowwise_adagrad", "lazy_adam", "fbgemm_tbe")
STATE = {"dense_adam": 4, "sparse_adam": 3, "rowwise_adagrad": 1.1, "lazy_adam": 3,
         "fbgemm_tbe": 1.1}  # the table's copies each anchor holds (weights included)


def zipf_ids(rng: np.random.Generator, n: int, space: int, a: float = 1.2) -> np.ndarray:
    """n Zipf(a) ranks scattered over [0, space) (rank r -> r * 2654435761 mod space)."""
    ranks = rng.zipf(a, n).astype(np.int64) % space
    return (ranks * 2654435761) % space


def frame(rng: np.random.Generator, n: int, users: int, items: int) -> pa.Table:
    """n rows: Zipf users and items, two categoricals, two dense columns, two labels."""
    user, item = zipf_ids(rng, n, users), zipf_ids(rng, n, items, 1.1)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    c1, c2 = rng.integers(0, 10, n), rng.integers(0, 100, n)
    logit = 0.8 * x1 - 0.5 * x2 + 0.3 * (c1 % 3) + 0.5 * ((user % 7) == 0) - 1.5
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    buy = click & (rng.random(n) < 0.2 + 0.3 * ((item % 5) == 0))
    return pa.table({"user": user, "item": item, "c1": c1.astype(str), "c2": c2.astype(str),
                     "x1": x1, "x2": x2, "click": click, "buy": buy.astype(np.int64)})


def write_chunks(folder: Path, rows: int, users: int, items: int, chunk: int = 1_000_000
                 ) -> Path:
    """`rows` rows as Parquet files of at most `chunk` rows, written one at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i, start in enumerate(range(0, rows, chunk)):
        pq.write_table(frame(rng, min(chunk, rows - start), users, items),
                       folder / f"part-{i:04d}.parquet")
    return folder


def child(argv: list[str], omp: str, timeout: float) -> tuple[int, float, float, str]:
    """(exit status, wall seconds, peak RSS in MB, stderr's tail) of a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    if omp == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        err.seek(0)
        tail = err.read()[-400:]
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, \
        usage.ru_maxrss / 1024, tail


def epoch_seconds(out: Path) -> tuple[float, float]:
    """(epoch 1's seconds, its training rows per second) from the run's metrics.jsonl."""
    run = next(out.iterdir())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    start = next(r for r in records if r["type"] == "start")
    seconds = epochs[1]["elapsed"] - epochs[0]["elapsed"]
    return seconds, start["train_rows"] / seconds


def table_gb(n: int, optimizer: str) -> float:
    """Both id tables with their optimizer state (language/memory.py's rule), in GB."""
    from mtl_dsl.api import check_text
    from mtl_dsl.language.memory import table_memory

    extra = "" if optimizer == "default" else f" embedding_optimizer={optimizer}"
    checked = check_text(SPEC.format(data="x.parquet", n=n, extra=extra), "s.mtl")
    return sum(t.bytes for t in table_memory(checked.spec, checked.graph)) / 1e9


def run_spec(text: str, folder: Path, omp: str, timeout: float) -> dict:
    """`mtl compile SPEC --train` in a child: wall, epoch seconds, rows/s, peak MB."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s.mtl").write_text(text)
    out = folder / "runs"
    code, wall, peak, tail = child([sys.executable, "-m", "mtl_dsl", "compile",
                                    str(folder / "s.mtl"), "--train", "--quiet", "--out",
                                    str(out), "--max-params", "1e11"], omp, timeout)
    if code != 0:
        return {"error": f"exit {code}: {tail.strip().splitlines()[-1:] or ''}"}
    seconds, rate = epoch_seconds(out)
    shutil.rmtree(out)  # checkpoints of 1e8-row tables are GBs: one run's on disk at a time
    return {"wall": wall, "epoch": seconds, "rows_per_s": rate, "peak_mb": peak}


def anchor(case: str, n: int, steps: int) -> float:
    """One plain-PyTorch anchor (run in a child): the median step time in ms."""
    import torch

    torch.set_num_threads(2)
    rng = np.random.default_rng(3)
    batches = [torch.from_numpy(zipf_ids(rng, 2048 * 2, n)).view(2048, 2) for _ in range(steps)]
    v = torch.randn(16)
    step = _anchor_step(case, n, v)
    times = []
    for i, ids in enumerate(batches):
        t0 = time.perf_counter()
        step(ids)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _anchor_step(case: str, n: int, v):
    """The step function of an anchor over a fresh (n, 16) table."""
    import torch
    import torch.nn.functional as F

    from mtl_dsl.training.embeddings import row_optimizers as ro

    if case == "fbgemm_tbe":
        return _tbe_step(n, v)
    if case in ("dense_adam", "sparse_adam"):
        emb = torch.nn.Embedding(n, 16, sparse=case == "sparse_adam")
        opt = torch.optim.Adam(emb.parameters(), lr=1e-3, fused=True) \
            if case == "dense_adam" else torch.optim.SparseAdam(emb.parameters(), lr=1e-3)

        def step(ids):
            opt.zero_grad(set_to_none=True)
            (emb(ids) @ v).mean().backward()  # (B, 2, 16) @ (16,)
            opt.step()
        return step
    table = torch.randn(n, 16)
    slots = ro.state(case, table)
    count = [0]

    def rows_step(ids):
        unique, inverse = torch.unique(ids, return_inverse=True)
        leaf = table.index_select(0, unique).requires_grad_()  # (U, 16)
        (F.embedding(inverse, leaf) @ v).mean().backward()
        count[0] += 1
        ro.update(case, table, slots, unique, leaf.grad, 1e-3, count[0])
    return rows_step


def _tbe_step(n: int, v):
    """FBGEMM's table-batched embedding with fused exact row-wise Adagrad."""
    import torch
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)

    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(n, 16, EmbeddingLocation.HOST, ComputeDevice.CPU)], feature_table_map=[0, 0],
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=1e-3, eps=1e-8,
        pooling_mode=PoolingMode.SUM)

    def step(ids):
        flat = ids.t().reshape(-1)  # feature-major
        out = tbe(indices=flat, offsets=torch.arange(0, len(flat) + 1))  # (B, 32)
        (out.view(-1, 2, 16) @ v).mean().backward()
    return step


def fbgemm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("fbgemm_gpu") is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1e7,1e8", help="hash=N of the id tables")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--optimizers", default="default,dense", help="embedding_optimizer values")
    ap.add_argument("--stream-rows", type=int, default=10_000_000, help="0: no funnel")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--anchor-sizes", default="1e4,1e6,1e7,1e8")
    ap.add_argument("--anchor-steps", type=int, default=23)
    ap.add_argument("--omp", default="unset", help="unset, passive or unset,passive")
    ap.add_argument("--limit-gb", type=float, default=None,
                    help="skip cases above (default: 80%% of the memory available)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--work", type=Path, default=None, help="data and runs (default: /tmp)")
    ap.add_argument("--json", type=Path, default=None, help="also write every result here")
    ap.add_argument("--anchor-child", nargs=3, metavar=("CASE", "N", "STEPS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.anchor_child:
        case, n, steps = args.anchor_child
        print(json.dumps({"ms": anchor(case, int(float(n)), int(steps))}),
              file=sys.stderr)  # the parent reads the child's stderr
        return
    limit = args.limit_gb if args.limit_gb is not None else 0.8 * available_gb()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = measure(args, work, limit)
    print_tables(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1e6
    return 8.0


def measure(args, work: Path, limit: float) -> dict:
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    omps = args.omp.split(",")
    out: dict = {"spec": {}, "funnel": {}, "anchors": {}, "limit_gb": limit}
    data = work / "scale.parquet"
    pq.write_table(frame(np.random.default_rng(1), args.rows, 10_000_000, 1_000_000), data)
    for n in sizes:
        for opt in args.optimizers.split(","):
            for omp in omps:
                key = f"{n}|{opt}|{omp}"
                if table_gb(n, opt) > limit:
                    out["spec"][key] = {"skipped": f"tables need {table_gb(n, opt):.1f} GB"}
                    continue
                extra = "" if opt == "default" else f" embedding_optimizer={opt}"
                out["spec"][key] = run_spec(SPEC.format(data=data, n=n, extra=extra),
                                            work / f"s{n}-{opt}-{omp}", omp, args.timeout)
                print(key, out["spec"][key], flush=True)
    if args.stream_rows:
        folder = write_chunks(work / "funnel", args.stream_rows, args.users, args.items)
        for omp in omps:
            text = FUNNEL.format(data=folder, users=2 * args.users, items=2 * args.items)
            out["funnel"][omp] = run_spec(text, work / f"funnel-{omp}", omp, args.timeout)
            print("funnel", omp, out["funnel"][omp], flush=True)
    for n in (int(float(s)) for s in args.anchor_sizes.split(",") if s):
        for case in ANCHORS:
            for omp in omps:
                out["anchors"][f"{n}|{case}|{omp}"] = run_anchor(case, n, omp, args, limit)
    return out


def run_anchor(case: str, n: int, omp: str, args, limit: float) -> dict:
    if case == "fbgemm_tbe" and not fbgemm_available():
        return {"skipped": "fbgemm_gpu is not importable"}
    if STATE[case] * n * 16 * 4 / 1e9 > limit:
        return {"skipped": f"needs {STATE[case] * n * 64 / 1e9:.1f} GB"}
    code, _, peak, tail = child([sys.executable, __file__, "--anchor-child", case, str(n),
                                 str(args.anchor_steps)], omp, args.timeout)
    if code != 0:
        return {"error": tail.strip().splitlines()[-1:]}
    return {"peak_mb": peak, **json.loads(tail.strip().splitlines()[-1])} \
        if tail.strip() else {"error": "no output"}


def print_tables(results: dict, args) -> None:
    """The Markdown tables of docs/benchmarks.md."""
    def cell(r: dict | None, *keys: str) -> str:
        if not r or "skipped" in r or "error" in r:
            return "-"
        return " / ".join(_fmt(k, r[k]) for k in keys)

    omps = args.omp.split(",")
    print("\n| N | OMP | " + " | ".join(f"{o}: process s / epoch s / peak MB"
                                      for o in args.optimizers.split(",")) + " |")
    print("|---|---|" + "---|" * len(args.optimizers.split(",")))
    for n in (int(float(s)) for s in args.sizes.split(",") if s):
        for omp in omps:
            row = [cell(results["spec"].get(f"{n}|{o}|{omp}"), "wall", "epoch", "peak_mb")
                   for o in args.optimizers.split(",")]
            print(f"| {n:.0e} | {omp} | " + " | ".join(row) + " |")
    for omp, r in results["funnel"].items():
        print(f"\nfunnel ({args.stream_rows:,} rows, OMP {omp}): "
              + cell(r, "rows_per_s", "epoch", "peak_mb") + " (rows/s, epoch s, peak MB)")
    print("\n| N | OMP | " + " | ".join(ANCHORS) + " |  (ms/step, peak MB)")
    print("|---|---|" + "---|" * len(ANCHORS))
    for n in (int(float(s)) for s in args.anchor_sizes.split(",") if s):
        for omp in omps:
            row = [cell(results["anchors"].get(f"{n}|{c}|{omp}"), "ms", "peak_mb")
                   for c in ANCHORS]
            print(f"| {n:.0e} | {omp} | " + " | ".join(row) + " |")


def _fmt(key: str, v: float) -> str:
    if key in ("peak_mb", "rows_per_s"):
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


if __name__ == "__main__":
    main()
