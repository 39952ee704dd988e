"""`mtl check SPEC` as a whole process, imports included, against two reference processes
run side by side: the bare interpreter (`python -c pass`) and the imports of the libraries
no check can do without (`import typer, lark` and pydantic's BaseModel). The target of the
first-day issue is under 0.3 s; the ratio to the libraries' imports says how much of the
time is the project's own, on a machine faster or slower than ours.

The three default specs take the three paths of the check's data look: `mmoe.mtl` (a
generator whose declared columns fit the spec: no draw, no numpy), `esmm.mtl` (a derived
label over generated data: a 1,000-row draw, with numpy) and `census_mmoe.mtl` (the first
10,000 rows of a CSV file through pyarrow).

Runs alternate over all commands, after one untimed run of each (it writes the bytecode
caches a user's second run finds: a `PYTHONDONTWRITEBYTECODE` in the environment is
dropped for the children, as it is not set on a user's machine). Each figure is the median
of --repeats.

    python bench/bench_check.py                      # three specs, 15 repeats
    python bench/bench_check.py --specs specs/ple.mtl --repeats 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.3  # seconds (the first-day issue)
LIBRARIES = "import typer, lark; from pydantic import BaseModel"


def mtl_command() -> list[str]:
    """The `mtl` script installed beside this interpreter (what a user runs), else the
    module form (the same entry point: mtl_dsl/tools/cli/entry.py)."""
    script = Path(sys.executable).with_name("mtl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mtl_dsl"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one whole process; it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", default=["specs/mmoe.mtl", "specs/esmm.mtl",
                                                   "specs/census_mmoe.mtl"])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    mtl = mtl_command()
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "libraries' imports": [sys.executable, "-c", LIBRARIES],
                **{f"mtl check {s}": [*mtl, "check", s] for s in args.specs}}
    for cmd in commands.values():
        timed(cmd, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd, env))

    floor = statistics.median(times["libraries' imports"])
    print(f"{' '.join(mtl)}; medians of {args.repeats} (s)")
    print(f"{'command':44s} {'median':>7s} {'min':>7s} {'vs libraries':>13s} {'< 0.3 s':>8s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = ("yes" if med < TARGET else "NO") if name.startswith("mtl") else ""
        print(f"{name:44s} {med:7.3f} {min(ts):7.3f} {med / floor:12.2f}x {target:>8s}")


if __name__ == "__main__":
    main()
