"""Inference throughput of an exported MMoE: onnxruntime, eager torch and the exported
program (torch.export) at batch 1, 64 and 2,048 on CPU, then `mtl predict` on 1M rows
through the compiled model and through each artefact (reading, encoding, writing included).

The model is bench/bench_mmoe.py's Criteo-like MMoE (26 sparse x 16 + 13 dense, 8 experts
[256, 128], towers [64], 2 tasks), trained one epoch on 20,000 random rows. Figures are
the median rows/s over rounds, in docs/export.md.

    python bench/bench_export.py                  # batches 1, 64, 2048; predict on 1M rows
    python bench/bench_export.py --rows 100000 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_mmoe import default_spec  # noqa: E402
from mtl_dsl.api import check_file  # noqa: E402
from mtl_dsl.tools.serving import artefacts  # noqa: E402
from mtl_dsl.tools.serving.export import export_run  # noqa: E402
from mtl_dsl.tools.serving.predict import open_run  # noqa: E402
from mtl_dsl.tools.serving.predict import predict_file  # noqa: E402
from mtl_dsl.tools.serving.bundle import write_columns  # noqa: E402
from mtl_dsl.tools.serving.signature import example_inputs, model_inputs  # noqa: E402
from mtl_dsl.training.loop import train  # noqa: E402
from mtl_dsl.language.overrides import data_setting  # noqa: E402


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    """n random rows of the bench model's columns, as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cols = {f"c{i}": rng.integers(0, 1000, n) for i in range(26)}
    cols |= {f"i{i}": rng.normal(size=n).astype(np.float32) for i in range(13)}
    cols |= {"click": rng.integers(0, 2, n), "buy": rng.integers(0, 2, n)}
    pq.write_table(pa.table(cols), path)


def rate(run, rows: int, seconds: float = 1.0, rounds: int = 5) -> float:
    """Median rows/s of `run()` over rounds of about `seconds` each."""
    run()
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        run()
        calls += 1
    per = max(1, int(calls * seconds / max(time.perf_counter() - start, 1e-9)))
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per):
            run()
        out.append(per * rows / (time.perf_counter() - t))
    return statistics.median(out)


def engines(ck, onnx_file: Path, pt2_file: Path):
    """name -> function(inputs tuple) for each way of running the model."""
    import onnxruntime as ort

    names = [i["name"] for i in model_inputs(ck.model, ck.encoders)]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    program = torch.export.load(str(pt2_file)).module()
    ck.model.eval()

    def onnx(xs):
        return session.run(None, {n: x.numpy() for n, x in zip(names, xs)})

    def eager(xs):
        with torch.no_grad():
            return ck.model.predict(dict(zip(names, xs)))

    def exported(xs):
        with torch.no_grad():
            return program(*xs)

    return {"onnxruntime": onnx, "eager torch": eager, "torch.export": exported}, names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for `mtl predict`")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench_export_"))
    (folder / "s.mtl").write_text(default_spec(folder).replace(
        f'data csv("{(folder / "header.csv").as_posix()}")',
        'data parquet("train.parquet")') + "train epochs=1 batch=512 seed=1\n")
    write_rows(folder / "train.parquet", 20_000)
    checked = check_file(folder / "s.mtl").raise_for_errors()
    result = train(checked.spec, checked.graph, out_dir=folder / "runs", progress=False)
    ck = open_run(result.run_dir)
    files = {s: export_run(ck, folder / f"m{s}") for s in (".onnx", ".pt2", ".py")}
    runs, names = engines(ck, files[".onnx"], files[".pt2"])
    inputs = model_inputs(ck.model, ck.encoders)
    print(f"threads={args.threads}, torch {torch.__version__}")
    print("| batch | " + " | ".join(runs) + " |")
    print("|---:|" + "---:|" * len(runs))
    for b in (1, 64, 2048):
        xs = tuple(torch.randint(0, 1000, x.shape) if x.dtype == torch.long else
                   torch.randn(x.shape) for x in example_inputs(inputs, b))
        line = [f"{rate(lambda: run(xs), b):,.0f}" for run in runs.values()]
        print(f"| {b:,} | " + " | ".join(line) + " rows/s |")
    predict_rows(folder, ck, result.run_dir, files, args.rows)


def predict_rows(folder: Path, ck, run_dir: Path, files: dict, n: int) -> None:
    """`mtl predict` on n rows: read, encode, predict, write, through each path."""
    write_rows(folder / "big.parquet", n, seed=1)
    setting = data_setting(ck.spec.data, str(folder / "big.parquet"))
    paths = {"compiled model": lambda: predict_file(ck, setting, folder / "p0.parquet"),
             "--model m.onnx": lambda: write_columns(
                 artefacts.onnx_file_predictions(files[".onnx"], setting), folder / "p1.parquet"),
             "--model m.pt2": lambda: write_columns(artefacts.torch_file_predictions(
                 files[".pt2"], run_dir, setting), folder / "p2.parquet"),
             "--model m.py": lambda: write_columns(artefacts.torch_file_predictions(
                 files[".py"], run_dir, setting), folder / "p3.parquet")}
    print(f"\n`mtl predict` on {n:,} rows (Parquet in, Parquet out):")
    for name, run in paths.items():
        t = time.perf_counter()
        run()
        s = time.perf_counter() - t
        print(f"  {name:16s} {s:6.2f} s  {n / s:>12,.0f} rows/s")


if __name__ == "__main__":
    main()
