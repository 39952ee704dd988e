"""The `mtl` command against a plain PyTorch script, whole processes, imports included.

What a user runs, `mtl compile SPEC --train` (check, read the Parquet file, fit the encoders,
compile, train one epoch, validate, write the run folder: checkpoint, resume state, metrics),
timed from outside against `bench/plain_epoch.py`, the hand-written script for the same
epoch from the same file (every CPU trick: index_add_ embedding backward, fused Adam, batched
experts). Workload (bench/bench_zoo.py's): 200,000 rows, 26 sparse features (vocabulary
10,000, dim 16), 13 dense, two binary tasks; batch 2,048; 2 threads; 1% validation.

The command runs as on a terminal, where `--plots auto` (the default) is `background`: it
returns once its result is printed and a detached process draws its plots (losses.png,
experts.png; training/plots.py). The benchmark captures the command's output, so it passes
`--plots background` explicitly. That drawing is not in the command's time; the benchmark
waits for the plots before the next run (so the drawer never competes with a timed run) and
reports how long after the command's return they were there (`--plots wait`, the default
off a terminal, times the command drawing them itself).

Runs alternate (which of the two goes first alternates too); each figure is the median of
--repeats. Both wall time and CPU time (user + system of the child) are reported: on a shared
machine the CPU time is the steadier of the two.

    python bench/bench_cli.py                         # shared_bottom and mmoe, 3 repeats
    python bench/bench_cli.py --models mmoe --rows 50000 --repeats 1    # a quick look
    python bench/bench_cli.py --plots wait            # the command drawing its plots itself
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_zoo import make_data, spec_text  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one whole process; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def plots_ready(runs: Path, seen: set[Path], limit: float = 60.0) -> float:
    """Seconds until the newest run folder's losses.png is there (a detached drawer)."""
    start = time.perf_counter()
    new = [p for p in runs.iterdir() if p not in seen]
    seen.update(new)
    if len(new) != 1:
        raise SystemExit(f"expected one new run folder in {runs}, found {len(new)}")
    while not (new[0] / "losses.png").is_file():
        if time.perf_counter() - start > limit:
            raise SystemExit(f"no plots in {new[0]} after {limit:.0f} s: see its plots.log")
        time.sleep(0.02)
    return time.perf_counter() - start


def commands(model: str, data: Path, folder: Path, plots: str) -> dict[str, list[str]]:
    spec = folder / f"{model}.mtl"
    spec.write_text(spec_text(model, data))
    out = folder / "out"
    out.mkdir(exist_ok=True)
    return {"mtl": [sys.executable, "-m", "mtl_dsl", "compile", str(spec), "--train",
                    "--quiet", "--out", str(out / "runs"), "--plots", plots],
            "script": [sys.executable, str(ROOT / "bench" / "plain_epoch.py"), str(data), model,
                       str(out)]}


def run(models: list[str], rows: int, repeats: int, plots: str = "background") -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_data(folder, rows, "parquet")
        cmds = {m: commands(m, data, folder, plots) for m in models}
        runs, seen = folder / "out" / "runs", set()
        for m in models:  # a first, untimed run of each: file caches, torch's first import
            for who, cmd in cmds[m].items():
                timed(cmd, folder)
                if who == "mtl" and plots != "off":
                    plots_ready(runs, seen)
        for r in range(repeats):
            for m in models:
                order = ["mtl", "script"] if r % 2 == 0 else ["script", "mtl"]
                for who in order:
                    wall, cpu = timed(cmds[m][who], folder)
                    after = plots_ready(runs, seen) if who == "mtl" and plots != "off" else 0.0
                    results.setdefault(m, {}).setdefault(who, []).append((wall, cpu))
                    print(f"  round {r + 1} {m:14s} {who:6s} wall {wall:6.2f} s  cpu {cpu:6.2f} s"
                          + (f"  plots there {after:.2f} s after" if who == "mtl" else ""),
                          flush=True)
    return results


def report(results: dict) -> str:
    lines = ["| model | `mtl compile --train` wall / CPU (s) | plain script wall / CPU (s) "
             "| ratio wall | ratio CPU |", "|---|---|---|---|---|"]
    for m, by in results.items():
        med = {who: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
               for who, v in by.items()}
        (mw, mc), (sw, sc) = med["mtl"], med["script"]
        lines.append(f"| {m} | {mw:.2f} / {mc:.2f} | {sw:.2f} / {sc:.2f} | {mw / sw:.3f} "
                     f"| {mc / sc:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["shared_bottom", "mmoe"],
                    choices=["shared_bottom", "mmoe"])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plots", default="background", choices=["background", "wait", "off"],
                    help="the command's --plots (default: background, what `auto` is on a "
                    "terminal)")
    args = ap.parse_args()
    print(report(run(args.models, args.rows, args.repeats, args.plots)))


if __name__ == "__main__":
    main()
