"""The MMoE paper's synthetic benchmark (Ma et al. 2018, section 5) through the Python API.

Two regression tasks from the `synthetic.correlated` generator (mtl_dsl/data/synthetic.py:
y_j = w_j.x + sum_i sin(alpha_i w_j.x + beta_i) + noise, cos(w_1, w_2) = the correlation);
shared-bottom, OMoE and MMoE of about the same parameter count (8 single-layer experts of
16 units vs. a 128-unit bottom; towers of 8); for each correlation and seed the data and the
initialisation are drawn from the seed; each model trains on `--rows` rows (a `val=` share
of them validates and picks the best epoch) and is scored on `--test` further rows of the
same generator: the sum of the two tasks' test MSEs. Prints a table of medians and spreads
per model and correlation, flags every run worse than 1.5x the median of its (model,
correlation) cell and of the models on the same data, counts the expert-diagnostic warnings
(training/experts.py) and writes `results.json`, `table.md` and `loss_vs_correlation.png`
to `--out`.

The defaults are the protocol measured in docs/benchmarks.md, where no run is worse than
1.5x: 40,000 Adam steps of batch 128, lr 3e-3 on a cosine schedule with 500 warm-up steps,
leaky-ReLU layers. With ReLU, lr 1e-3 and 10,000 steps (`--act relu --lr 1e-3 --steps
10000 --train ""`) narrow ReLU layers die on some seeds and most runs stop while still
improving.

    python bench/synthetic.py                                   # the paper's data, 5 seeds
    python bench/synthetic.py --correlations 1.0,0.9            # half of it (two processes)
    python bench/synthetic.py --rows 20000 --test 5000 --seeds 3 --steps 1500
    python bench/synthetic.py --gate "temperature=2, balance=0.01"   # MMoE/OMoE gate options
    python bench/synthetic.py --models mmoe,dselect              # DSelect-k (k=2) gates too
    python bench/synthetic.py --act gelu --seed-list 5           # GELU layers, seed 5 only
    python bench/synthetic.py --report bench/out/synthetic/results.json   # summarise again
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_dsl import api  # noqa: E402
from mtl_dsl.data.synthetic import correlated  # noqa: E402
from mtl_dsl.language import registry as reg  # noqa: E402

MODELS = ("shared_bottom", "omoe", "mmoe")
OUTLIER = 1.5  # a run worse than this times its cell's median is reported
VAL = 0.1

HEAD = 'model {name}\ndata synthetic.correlated(rows=100, correlation=0.5)\n' \
       'feature x = dense(100)\nlabel y1, y2\n'
BODY = {
    "shared_bottom": "experts bottom = mlp(x, 128{act})\n"
                     "tower t_a = mlp(bottom, 8{act})\ntower t_b = mlp(bottom, 8{act})\n",
    "omoe": "experts e[8] = mlp(x, 16{act})\ngate g = softmax(x{gate}) over e\n"
            "tower t_a = mlp(g, 8{act})\ntower t_b = mlp(g, 8{act})\n",
    "mmoe": "experts e[8] = mlp(x, 16{act})\ngate g_a = softmax(x{gate}) over e\n"
            "gate g_b = softmax(x{gate}) over e\n"
            "tower t_a = mlp(g_a, 8{act})\ntower t_b = mlp(g_b, 8{act})\n",
    "dselect": "experts e[8] = mlp(x, 16{act})\ngate g_a = dselect(x, k=2, entropy=0.01) over e\n"
               "gate g_b = dselect(x, k=2, entropy=0.01) over e\n"
               "tower t_a = mlp(g_a, 8{act})\ntower t_b = mlp(g_b, 8{act})\n",
}
TAIL = "task a: regression(label=y1) from t_a\ntask b: regression(label=y2) from t_b\n" \
       "weighting fixed\ntrain epochs={epochs} batch={batch} lr={lr} seed={seed} val={val}{extra}\n"


def spec_text(model: str, seed: int, epochs: int, lr: float, gate: str = "",
              batch: int = 128, act: str = "relu", train: str = "") -> str:
    """The spec of one model; `gate` is extra softmax parameters ('temperature=2'), `act`
    the activation of every layer (bottom, experts and towers alike, so the models differ
    only in how they share); `train` more settings of the train statement."""
    act_arg = "" if act == "relu" else f", act={act}"
    body = BODY[model].format(gate=f", {gate}" if gate else "", act=act_arg)
    return HEAD.format(name=model) + body + TAIL.format(
        epochs=epochs, batch=batch, lr=lr, seed=seed, val=VAL, extra=f" {train}" if train else "")


def frames(rows: int, test: int, correlation: float, seed: int) -> tuple[dict, dict]:
    """(training + validation frame, test frame) from one draw of the generator."""
    train_rows = math.ceil(rows / (1 - VAL))
    p = reg.SyntheticCorrelated(rows=train_rows + test, correlation=correlation, seed=seed)
    frame = correlated(p)
    return ({k: v[:train_rows] for k, v in frame.items()},
            {k: v[train_rows:] for k, v in frame.items()})


def test_mse(result, test: dict) -> float:
    """The sum of the two tasks' MSEs on the test frame, from the best epoch's weights."""
    batch = {k: torch.from_numpy(np.ascontiguousarray(v))
             for k, v in result.encoders.encode(test).items()}
    device = next(result.model.parameters()).device
    result.model.eval()
    out = result.model.predict({k: v.to(device) for k, v in batch.items()})
    return sum(float(((out[t].cpu() - torch.from_numpy(test[y])) ** 2).mean())
               for t, y in (("a", "y1"), ("b", "y2")))


def warnings_of(run_dir: Path) -> list[str]:
    """The distinct expert-diagnostic warnings of a run's epoch records."""
    seen: dict[str, None] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for w in record.get("experts", {}).get("warnings", []):
            seen.setdefault(w.split(" (")[0].split(":")[0], None)
    return list(seen)


def run_one(model: str, correlation: float, seed: int, args, out: Path) -> dict:
    train, test = frames(args.rows, args.test, correlation, seed)
    epochs = max(1, round(args.steps / math.ceil(args.rows / args.batch)))
    gate = args.gate if model in ("omoe", "mmoe") else ""
    text = spec_text(model, seed, epochs, args.lr, gate, args.batch, args.act, args.train)
    spec = api.check_text(text).raise_for_errors().spec
    t0 = time.perf_counter()
    result = api.train(spec, frame=train, out_dir=out, progress=False)
    return {"model": model, "correlation": correlation, "seed": seed, "epochs": epochs,
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "test_mse": test_mse(result, test), "best_epoch": result.best_epoch,
            "seconds": round(time.perf_counter() - t0, 1), "warnings": warnings_of(result.run_dir)}


def summarise(runs: list[dict], models, correlations) -> tuple[list[str], list[dict]]:
    """Markdown table rows (median [min, max] per cell) and the outlier runs."""
    lines = ["| model | params | " + " | ".join(f"corr {c:g}" for c in correlations) + " |",
             "|---|---|" + "---|" * len(correlations)]
    outliers = []
    for m in models:
        cells, params = [], next((r["parameters"] for r in runs if r["model"] == m), 0)
        for c in correlations:
            losses = [r["test_mse"] for r in runs if r["model"] == m and r["correlation"] == c]
            if not losses:
                cells.append("-")
                continue
            med = statistics.median(losses)
            cells.append(f"{med:.3f} [{min(losses):.3f}, {max(losses):.3f}]")
            outliers += [r for r in runs if r["model"] == m and r["correlation"] == c
                         and r["test_mse"] > OUTLIER * med]
        lines.append(f"| {m} | {params:,} | " + " | ".join(cells) + " |")
    return lines, outliers


def seed_outliers(runs: list[dict]) -> list[tuple[dict, float]]:
    """Runs worse than OUTLIER x the median over the models of the same correlation and seed
    (the same data): (run, its ratio to that median)."""
    out = []
    for key in {(r["correlation"], r["seed"]) for r in runs}:
        same = [r for r in runs if (r["correlation"], r["seed"]) == key]
        med = statistics.median(r["test_mse"] for r in same)
        out += [(r, r["test_mse"] / med) for r in same if r["test_mse"] > OUTLIER * med]
    return sorted(out, key=lambda o: (o[0]["correlation"], o[0]["seed"], o[0]["model"]))


def report(runs: list[dict], models, correlations, out: Path) -> None:
    """table.md, loss_vs_correlation.png and the outliers, printed."""
    lines, outliers = summarise(runs, models, correlations)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(runs, models, correlations, out / "loss_vs_correlation.png")
    print("\n".join(lines))
    print(f"runs worse than {OUTLIER}x the median of their model and correlation over the "
          f"seeds: {len(outliers)}")
    for r in outliers:
        print(f"  {r['model']} corr={r['correlation']:g} seed={r['seed']}: {r['test_mse']:.4f}")
    by_seed = seed_outliers(runs)
    print(f"runs worse than {OUTLIER}x the median of the models on the same data "
          f"(correlation, seed): {len(by_seed)}")
    for r, ratio in by_seed:
        print(f"  {r['model']} corr={r['correlation']:g} seed={r['seed']}: {ratio:.2f}x")
    warned = [r for r in runs if r["warnings"]]
    print(f"runs with expert-diagnostic warnings: {len(warned)}")
    for r in warned:
        print(f"  {r['model']} corr={r['correlation']:g} seed={r['seed']}: {r['warnings']}")


def plot(runs: list[dict], models, correlations, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for m in models:
        xs, med, lo, hi = [], [], [], []
        for c in correlations:
            losses = [r["test_mse"] for r in runs if r["model"] == m and r["correlation"] == c]
            if losses:
                xs.append(c)
                med.append(statistics.median(losses))
                lo.append(med[-1] - min(losses))
                hi.append(max(losses) - med[-1])
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=m)
    ax.set_xlabel("correlation of the tasks")
    ax.set_ylabel("test MSE, sum of both tasks (median, min-max)")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="training rows (paper: 100k)")
    ap.add_argument("--test", type=int, default=10_000, help="test rows (paper: 10k)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 1..N")
    ap.add_argument("--seed-list", default="", help="these seeds instead, e.g. 5 or 1,5")
    ap.add_argument("--act", default="leaky_relu",
                    help="activation of every layer of every model (relu, gelu, ...)")
    ap.add_argument("--steps", type=int, default=40_000, help="optimizer steps")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--correlations", default="1.0,0.9,0.8,0.5")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--gate", default="", help="extra softmax gate parameters for OMoE/MMoE")
    ap.add_argument("--train", default="schedule=cosine warmup=500",
                    help='more train settings ("" for none)')
    ap.add_argument("--out", default="bench/out/synthetic")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="only summarise the runs of an earlier results.json")
    args = ap.parse_args(argv)
    correlations = [float(c) for c in args.correlations.split(",")]
    models = [m for m in args.models.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        runs = json.loads(Path(args.report).read_text())["runs"]
        report(runs, [m for m in models if any(r["model"] == m for r in runs)],
               sorted({r["correlation"] for r in runs}, reverse=True), out)
        return 0
    torch.set_num_threads(1)
    seeds = ([int(s) for s in args.seed_list.split(",")] if args.seed_list
             else range(1, args.seeds + 1))
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in correlations:
            for seed in seeds:
                for m in models:
                    runs.append(run_one(m, c, seed, args, Path(tmp)))
                    r = runs[-1]
                    print(f"{m:14s} corr={c:g} seed={seed} test_mse={r['test_mse']:.4f} "
                          f"epochs={r['epochs']} best={r['best_epoch']} {r['seconds']}s"
                          + (f" warnings={r['warnings']}" if r["warnings"] else ""), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    report(runs, models, correlations, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
