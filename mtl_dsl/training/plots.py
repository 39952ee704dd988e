"""The training run's plot, `losses.png`, read back from the records in metrics.jsonl.

One panel per metric family and scale, because curves of different units on one axis hide
each other (an AUC between 0.5 and 0.8 is a flat line next to an MSE of 13):

* loss: each task's training loss by step (lines) and validation loss at each epoch end
  (markers, same colour), log scale when the values span more than a factor of 20;
* validation metrics in [0, 1] (AUC, accuracy: the registry's `UNIT_INTERVAL_METRICS`);
* one panel per error metric (mse, mae, logloss), log scale when the range is large;
* task weights by step, only when they change: fixed weights are a text note, not flat
  lines lying on each other;
* the gradient cosine between tasks on the shared parameters, when probed.

Every task has its own colour, line style and marker, so two equal curves stay visible.
`experts.png` (:func:`draw_experts`) is the expert diagnostics' heat map (training/experts.py).

matplotlib is imported only when a plot is drawn; its import and the drawing cost about
0.8 s of CPU, a sixth of a one-epoch run of bench/bench_cli.py. So on a terminal `mtl
compile --train` prints its result and returns while a detached process (:func:`draw_later`,
this module run as `python -m mtl_dsl.training.plots RUN_DIR TITLE`) draws both plots from
the run folder's metrics.jsonl, the way `git gc --auto` detaches; each PNG appears whole
(written to a temporary file, then renamed) and a failure is written to RUN_DIR/plots.log.
Off a terminal the command draws them before it returns (tools/cli/spec_commands.py, `plot_mode`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..language.registry import UNIT_INTERVAL_METRICS
from .runs import replace_file

if TYPE_CHECKING:
    from ..language.ir import Spec

PANEL_WIDTH, PANEL_HEIGHT, MAX_COLUMNS = 5.2, 3.8, 3
LOG_RANGE = 20.0  # a log axis when the largest positive value is this many times the smallest
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def style(i: int) -> dict[str, Any]:
    """The i-th task's colour, line style and marker: distinct in all three."""
    return {"color": f"C{i % 10}", "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def wants_log(values: list[float]) -> bool:
    """A log axis when every value is positive and they span more than LOG_RANGE."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) > LOG_RANGE


def weights_change(steps: list[dict]) -> bool:
    """Whether any task weight moves during the run (else the panel would be flat lines)."""
    seen: dict[str, float] = {}
    for r in steps:
        for name, w in r["weights"].items():
            if abs(seen.setdefault(name, w) - w) > 1e-9 * max(1.0, abs(w)):
                return True
    return False


def validation_metrics(epochs: list[dict]) -> list[str]:
    """The metrics the epochs validated besides the loss, in order of first appearance."""
    names: dict[str, None] = {}
    for r in epochs:
        for metrics in r["val"].values():
            names.update((m, None) for m in metrics if m != "loss")
    return list(names)


def panels(records: list[dict]) -> list[str]:
    """The panels this run gets: 'loss', 'unit' ([0, 1] metrics), 'metric:NAME' per error
    metric, 'weights' when they change, 'cosine' when probed."""
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    metrics = validation_metrics(epochs)
    out = ["loss"]
    if any(m in UNIT_INTERVAL_METRICS for m in metrics):
        out.append("unit")
    out += [f"metric:{m}" for m in metrics if m not in UNIT_INTERVAL_METRICS]
    if weights_change(steps):
        out.append("weights")
    if any(r.get("grad_cosine") for r in epochs):
        out.append("cosine")
    return out


def _tasks(records: list[dict]) -> list[str]:
    """Every task named by a record (training losses, weights or validation), in order."""
    names: dict[str, None] = {}
    for r in records:
        for key in ("train_loss", "val", "weights"):
            names.update((n, None) for n in r.get(key) or {})
    return list(names)


def _loss(ax, steps: list[dict], epochs: list[dict], tasks: list[str]) -> None:
    values = []
    for i, name in enumerate(tasks):
        s = style(i)
        train = [(r["step"], r["train_loss"][name]) for r in steps if name in r["train_loss"]]
        if train:
            ax.plot(*zip(*train), color=s["color"], linestyle=s["linestyle"],
                    label=f"{name} train")
        val = [(r["step"], r["val"][name]["loss"]) for r in epochs
               if "loss" in r["val"].get(name, {})]
        if val:
            ax.plot(*zip(*val), color=s["color"], linestyle="none", marker=s["marker"],
                    markeredgecolor="black", label=f"{name} validation")
        values += [v for _, v in train + val]
    ax.set_title("loss (lines: training, markers: validation)")
    ax.set_xlabel("step")
    if wants_log(values):
        ax.set_yscale("log")


def _metric(ax, epochs: list[dict], tasks: list[str], metrics: list[str], title: str,
            log_ok: bool) -> None:
    """Validation `metrics` by epoch; a log axis only for errors (`log_ok`) of a wide range."""
    values = []
    for i, name in enumerate(tasks):
        for j, m in enumerate(metrics):
            points = [(r["epoch"], r["val"][name][m]) for r in epochs
                      if m in r["val"].get(name, {})]
            if points:
                s = style(i)
                ax.plot(*zip(*points), color=s["color"],
                        linestyle=LINESTYLES[(i + j) % len(LINESTYLES)], marker=s["marker"],
                        label=f"{name} {m}" if len(metrics) > 1 else name)
                values += [v for _, v in points]
    ax.set_title(title)
    ax.set_xlabel("epoch")
    if log_ok and wants_log(values):
        ax.set_yscale("log")


def _weights(ax, steps: list[dict], tasks: list[str]) -> None:
    for i, name in enumerate(tasks):
        points = [(r["step"], r["weights"][name]) for r in steps if name in r["weights"]]
        if points:
            ax.plot(*zip(*points), markevery=max(1, len(points) // 10), label=name,
                    **style(i))
    ax.set_title("task weight (effective)")
    ax.set_xlabel("step")


def _cosine(ax, epochs: list[dict]) -> None:
    pairs = sorted({k for r in epochs for k in r.get("grad_cosine", {})})
    for i, pair in enumerate(pairs):  # below 0: the tasks' shared-parameter gradients conflict
        cos = [(r["epoch"], r["grad_cosine"][pair]) for r in epochs
               if pair in r.get("grad_cosine", {})]
        ax.plot(*zip(*cos), label=pair.replace("|", " / "), **style(i))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_title("gradient cosine (shared parameters)")
    ax.set_xlabel("epoch")


def weights_note(steps: list[dict]) -> str | None:
    """The note that stands for a weights panel of flat lines, or None when they change."""
    if not steps or weights_change(steps):
        return None
    shown = ", ".join(f"{k}={v:.3g}" for k, v in steps[0]["weights"].items())
    return f"task weights fixed during the run: {shown}"


def figure(records: list[dict], spec: Spec | str):
    """The matplotlib Figure of a run (tests read its axes; :func:`plot` saves it), titled
    with the spec's name."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    tasks, names = _tasks(records), panels(records)
    metrics = validation_metrics(epochs)
    cols = 2 if len(names) == 4 else min(len(names), MAX_COLUMNS)  # 2x2, not 3 + 1
    rows = -(-len(names) // cols)
    note = weights_note(steps)
    fig = Figure(figsize=(PANEL_WIDTH * cols, PANEL_HEIGHT * rows + (0.4 if note else 0)))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        if name == "loss":
            _loss(ax, steps, epochs, tasks)
        elif name == "unit":
            unit = [m for m in metrics if m in UNIT_INTERVAL_METRICS]
            _metric(ax, epochs, tasks, unit, "validation " + ", ".join(unit) + " (0-1)", False)
        elif name.startswith("metric:"):
            m = name.split(":", 1)[1]
            _metric(ax, epochs, tasks, [m], f"validation {m}", True)
        elif name == "weights":
            _weights(ax, steps, tasks)
        else:
            _cosine(ax, epochs)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are counts
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(spec if isinstance(spec, str) else spec.name)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=9, style="italic")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


def plot(records: list[dict], path: Path, spec: Spec | str) -> float:
    """Write `path` (PNG); returns the seconds it took, matplotlib's import included."""
    t0 = time.perf_counter()
    save_png(figure(records, spec), path, dpi=90)
    return time.perf_counter() - t0


def save_png(fig, path: Path, dpi: int) -> None:
    """Write whole or not at all (the run folder's one atomic write, training/runs.py): a
    viewer or a tracker never reads half a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    replace_file(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))


def draw_experts(record: dict, path: Path) -> None:
    """A heat map, gates (rows) x experts (columns), of the mean gate weights of one epoch
    record; blank where a gate does not read an expert (PLE's levels show as blocks)."""
    from matplotlib.figure import Figure

    gates = record["experts"]["gates"]
    columns = list(dict.fromkeys(e for s in gates.values() for e in s["experts"]))
    grid = np.full((len(gates), len(columns)), np.nan)
    for r, s in enumerate(gates.values()):
        for e, v in zip(s["experts"], s["mean"]):
            grid[r, columns.index(e)] = v
    fig = Figure(figsize=(max(4.0, 0.5 * len(columns) + 2), max(2.5, 0.45 * len(gates) + 1.5)))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(gates)), list(gates), fontsize=8)
    fig.colorbar(image, ax=ax, label="mean gate weight")
    warned = len(record["experts"]["warnings"])
    ax.set_title(f"expert use, epoch {record['epoch']}"
                 + (f" ({warned} warning{'s' * (warned > 1)})" if warned else ""), fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def draw_run(run_dir: Path, title: str) -> list[Path]:
    """:func:`draw_all` from the run folder's metrics.jsonl (the detached drawer)."""
    text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    return draw_all([json.loads(line) for line in text.splitlines() if line.strip()],
                    run_dir, title)


def draw_all(records: list[dict], run_dir: Path, title: str) -> list[Path]:
    """losses.png, and experts.png from the last epoch record with expert diagnostics (a
    model with gates); the paths written."""
    written = [run_dir / "losses.png"]
    plot(records, written[0], title)
    gated = [r for r in records if r.get("type") == "epoch" and "experts" in r]
    if gated:
        written.append(run_dir / "experts.png")
        draw_experts(gated[-1], written[-1])
    return written


def draw_later(run_dir: Path, title: str) -> subprocess.Popen:
    """Start a detached process that draws the run's plots (:func:`draw_run`) and leaves
    RUN_DIR/plots.log only when it fails; the caller returns without waiting."""
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this mtl_dsl
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen([sys.executable, "-m", __name__, str(run_dir), title],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _main(argv: list[str]) -> int:
    run_dir, title = Path(argv[0]), argv[1]
    try:
        draw_run(run_dir, title)
    except Exception as err:  # noqa: BLE001 - said in the run folder: nobody is waiting
        (run_dir / "plots.log").write_text(f"the plots could not be drawn: "
                                           f"{type(err).__name__}: {err}\n", encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
