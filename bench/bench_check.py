"""`mtl check SPEC` as a whole process, imports included, against two reference processes
run side by side: the bare interpreter (`python -c pass`) and the imports of the libraries
no check can do without (`import typer, lark, networkx` and pydantic's BaseModel). The
target is under 0.5 s for a spec that reads no data file (docs/benchmarks.md, "`mtl
check`"); the ratio to the libraries' imports says how much of the time is the project's
own, on a machine faster or slower than ours.

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
    python bench/bench_check.py --warm 100 --repeats 21   # check_text, warm, in-process

`--warm KB` times instead what an editor's language server does on every keystroke:
`check_text` called again and again in one process (imports done, the collector as the
process left it) on a spec of about KB kilobytes, specs/mmoe.mtl's experts, gates, towers
and tasks repeated under distinct names.
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
TARGET = 0.5  # seconds, for a spec that reads no data file (docs/benchmarks.md)
LIBRARIES = "import typer, lark, networkx; from pydantic import BaseModel"


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


def big_spec(kb: int) -> str:
    """specs/mmoe.mtl with its experts, gates, towers and tasks repeated, under distinct
    names, until the text is `kb` kilobytes."""
    text = (ROOT / "specs" / "mmoe.mtl").read_text()
    head, body = text.split("experts e[8]")[0], []
    i, size = 0, len(head)
    while size < kb * 1024:
        block = (f"experts e{i}[8] = mlp(x, 16)\n"
                 f"gate g{i}_a = softmax(x) over e{i}\ngate g{i}_b = softmax(x) over e{i}\n"
                 f"tower t{i}_a = mlp(g{i}_a, 8)\ntower t{i}_b = mlp(g{i}_b, 8)\n"
                 f"task a{i}: regression(label=y1) from t{i}_a\n"
                 f"task b{i}: regression(label=y2) from t{i}_b\n\n")
        body.append(block)
        size, i = size + len(block), i + 1
    return head + "".join(body) + "weighting uncertainty\ntrain epochs=5 batch=128 lr=1e-3\n"


def warm(kb: int, repeats: int) -> None:
    """Median wall and CPU milliseconds of `check_text` on a `kb` KB spec, after one
    untimed call, in this process."""
    from mtl_dsl.language.check import check_text

    text = big_spec(kb)
    assert check_text(text).ok
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        check_text(text)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    print(f"check_text, {len(text) / 1024:.0f} KB spec, {text.count('task ')} tasks, warm; "
          f"medians of {repeats} (ms)")
    print(f"wall {1e3 * statistics.median(wall):7.1f}  min {1e3 * min(wall):7.1f}  "
          f"cpu {1e3 * statistics.median(cpu):7.1f}  min {1e3 * min(cpu):7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", default=["specs/mmoe.mtl", "specs/esmm.mtl",
                                                   "specs/census_mmoe.mtl"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warm", type=int, metavar="KB",
                    help="time check_text in-process on a spec of KB kilobytes instead")
    args = ap.parse_args()
    if args.warm:
        return warm(args.warm, args.repeats)

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
    below = f"< {TARGET} s"
    print(f"{'command':44s} {'median':>7s} {'min':>7s} {'vs libraries':>13s} {below:>8s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = ("yes" if med < TARGET else "NO") if name.startswith("mtl") else ""
        print(f"{name:44s} {med:7.3f} {min(ts):7.3f} {med / floor:12.2f}x {target:>8s}")


if __name__ == "__main__":
    main()
