"""Compare weighting methods (and specs) side by side: `mtl compare`.

Every (spec, method, seed) is trained in turn with the same data split and initial weights
for a given seed (both come from the seed), and so is every single-task baseline: the same
spec with the other tasks' `weight=0` under fixed weights, so the task trains alone on the
very same network (its tower, gate and experts start from the same weights as in the
multi-task runs), and the split is the multi-task runs' split. The table reports each task's
metrics (mean ± std over seeds), the multi-task gain against the baselines

    Δm% = 100 / T · Σ_t s_t (M_t − B_t) / |B_t|   (s_t = +1: higher is better)

computed per seed and then averaged. Δ_t% of a task is the change of its *primary metric*
alone (:func:`primary_metric`: the monitor's metric if `train monitor=` watches that task,
else the first of the task's `metrics=`, whose default order the registry states: auc for
binary, mse for regression, accuracy for multiclass), named in the table's header.

A task is flagged *better* or *negative transfer* only where the per-seed (paired: same seed,
same split and initial weights) differences say so beyond their spread: the two-sided 95%
t-interval over the n seeds, mean(Δ_t) ± t_{0.975, n−1} · sd(Δ_t) / √n, lies above or below
0. With one seed there is no test and no flag ("1 seed: no test"). *Seesaw*: one task
flagged better while another is flagged negative.

Results go to a folder: `results.md`, `results.csv`, `compare.png`, `runs.jsonl` (every
run's metrics) and `runs/` (the run folders, named SPEC-METHOD-seedN).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...language import registry as reg
from ...language.ir import Spec, make_setting
from ...language.overrides import weighting_setting, written
from ...api import check_file, with_overrides
from ...language.check import Checked
from .significance import interval

BASELINE = "single-task"
RULE = ("Flags: a task is *better* or has *negative transfer* where the two-sided 95% "
        "t-interval of its paired per-seed Δ, mean ± t(0.975, n−1)·sd/√n over the n seeds, "
        "lies above or below 0; *seesaw*: one task better while another is worse.")


class CompareError(ValueError):
    """A usage error of `mtl compare` (exit 2)."""


def split_methods(items: list[str] | None) -> list[str]:
    """'fixed,cagrad(c=0.4, norm_eps=1e-4)' -> ['fixed', 'cagrad(c=0.4, norm_eps=1e-4)']:
    commas inside parentheses stay."""
    out: list[str] = []
    for item in items or []:
        depth, start = 0, 0
        for i, ch in enumerate(item + ","):
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                if item[start:i].strip():
                    out.append(item[start:i].strip())
                start = i + 1
    return list(dict.fromkeys(out))


def with_rows(checked: Checked, rows: int | None) -> Checked:
    """`rows=N` for a synthetic data source (file sources have no row count to change)."""
    spec = checked.spec
    if rows is None:
        return checked
    if spec.data is None or "rows" not in type(spec.data.params).model_fields:
        raise CompareError(f"--rows works with synthetic data; {spec.name} reads "
                           f"{spec.data.kind if spec.data else 'no data'}")
    params = spec.data.params.model_copy(update={"rows": rows})
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"params": params})})
    return dataclasses.replace(checked, spec=spec)


def primary_metric(spec: Spec, task: str) -> str:
    """The metric a task is judged by: the monitor's if it watches this task, else the first
    of its metrics (the registry's default order), else its loss."""
    monitor = spec.train.params.monitor
    if monitor and monitor.partition(".")[0] == task:
        return monitor.partition(".")[2]
    metrics = spec.task(task).params.metrics
    return metrics[0] if metrics else "loss"


def folder_name(spec: str, method: str, seed: int) -> str:
    """A run's folder under runs/: SPEC-METHOD-seedN, the method's punctuation as '_' (two
    methods of the same name keep the second's dated folder)."""
    return f"{spec}-{re.sub(r'[^A-Za-z0-9_.=-]+', '_', method).strip('_')}-seed{seed}"


def single_task(spec: Spec, task: str) -> Spec:
    """`spec` with every other task's weight set to 0, fixed weights, and early stopping on
    `task` (its monitor if it had one, else its first metric): `task` trained alone on the
    same network and the same split (the task list, hence the split, is unchanged)."""
    tasks = tuple(t if t.name == task else
                  t.model_copy(update={"params": t.params.model_copy(update={"weight": 0.0})})
                  for t in spec.tasks)
    p = spec.train.params
    primary = primary_metric(spec, task)
    monitor = p.monitor if p.monitor and p.monitor.partition(".")[0] == task else \
        f"{task}.{primary}" if primary != "loss" else None
    train = spec.train.model_copy(update={"params": p.model_copy(update={"monitor": monitor})})
    fixed = make_setting("weighting", "fixed", reg.FixedWeighting(), spec.weighting.span)
    note = (f"\n# mtl compare: single-task baseline of '{task}': the other tasks' weight=0, "
            f"weighting fixed, monitor={monitor}\n")
    return spec.model_copy(update={"tasks": tasks, "weighting": fixed, "train": train,
                                   "source": spec.source + note})


# --------------------------------------------------------------------------
# Runs and the table
# --------------------------------------------------------------------------

@dataclass
class Run:
    spec: str
    method: str  # a weighting as written, or 'single-task:TASK'
    seed: int
    metrics: dict[str, dict[str, float]]  # task -> metric -> value (the best epoch's)
    split: str  # 'val' or 'test'
    run_dir: str
    seconds: float


@dataclass
class Row:
    """One (spec, method) over seeds."""

    spec: str
    method: str
    tasks: dict[str, dict[str, list[float]]]  # task -> metric -> one value per seed
    delta: list[float] = field(default_factory=list)  # Δm% per seed
    task_delta: dict[str, list[float]] = field(default_factory=dict)  # Δ_t% per seed

    def negative(self) -> list[str]:
        """Tasks whose Δ_t interval lies below 0: worse than alone beyond the seeds' spread."""
        return [t for t, d in self.task_delta.items() if (ci := interval(d)) and ci[1] < 0]

    def better(self) -> list[str]:
        """Tasks whose Δ_t interval lies above 0."""
        return [t for t, d in self.task_delta.items() if (ci := interval(d)) and ci[0] > 0]

    def seesaw(self) -> bool:
        return bool(self.negative()) and bool(self.better())

    def tested(self) -> bool:
        """Whether there are seeds enough (2) for the interval of some task."""
        return any(interval(d) is not None for d in self.task_delta.values())


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int = 4) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def task_gain(metrics: dict[str, float], base: dict[str, float], names: list[str]) -> float:
    """Δ_t% of one task: the mean over `names` of the signed relative change (`rows` passes
    the task's primary metric alone)."""
    parts = [(1 if reg.higher_is_better(m) else -1) * (metrics[m] - base[m]) / abs(base[m])
             for m in names if m in metrics and m in base and base[m] not in (0, None)
             and metrics[m] is not None]
    return 100 * statistics.fmean(parts) if parts else math.nan


@dataclass
class Comparison:
    specs: dict[str, Spec]
    methods: list[str]
    seeds: dict[str, list[int]]
    runs: list[Run]
    out_dir: Path
    notes: list[str] = field(default_factory=list)

    def metric_names(self, spec: str) -> dict[str, list[str]]:
        s = self.specs[spec]
        return {t.name: list(t.params.metrics) or ["loss"] for t in s.supervised}

    def rows(self) -> list[Row]:
        out = []
        for name in self.specs:
            names = self.metric_names(name)
            base = {(r.method.split(":", 1)[1], r.seed): r.metrics for r in self.runs
                    if r.spec == name and r.method.startswith(BASELINE + ":")}
            if base:
                b = Row(name, BASELINE, {t: {m: [] for m in ms} for t, ms in names.items()})
                for (task, seed), metrics in sorted(base.items(), key=lambda kv: kv[0][1]):
                    for m in names[task]:
                        b.tasks[task][m].append(metrics[task].get(m, math.nan))
                out.append(b)
            for method in self.methods:
                runs = [r for r in self.runs if r.spec == name and r.method == method]
                if not runs:
                    continue
                row = Row(name, method, {t: {m: [r.metrics[t].get(m, math.nan) for r in runs]
                                             for m in ms} for t, ms in names.items()})
                for r in runs:
                    gains = {t: task_gain(r.metrics[t], base[(t, r.seed)][t],
                                          [primary_metric(self.specs[name], t)])
                             for t in names if (t, r.seed) in base}
                    for t, g in gains.items():
                        row.task_delta.setdefault(t, []).append(g)
                    if gains and len(gains) == len(names):
                        row.delta.append(statistics.fmean(gains.values()))
                out.append(row)
        return out

    # ---- output --------------------------------------------------------------

    def primary(self, spec: str) -> dict[str, str]:
        """Each trained task's primary metric (the one its Δ_t% is of)."""
        return {t: primary_metric(self.specs[spec], t) for t in self.metric_names(spec)}

    def markdown(self) -> str:
        lines = []
        for name in self.specs:
            names = self.metric_names(name)
            cols = [f"{t} {m}" for t, ms in names.items() for m in ms]
            gains = any(r.method.startswith(BASELINE) for r in self.runs if r.spec == name)
            deltas = [f"Δ {t} {m} %" for t, m in self.primary(name).items()] if gains else []
            head = ["method", *cols, *deltas, "Δm%", "flags"]
            lines += [f"### {name}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for row in (r for r in self.rows() if r.spec == name):
                cells = [f"`{row.method}`" if row.method != BASELINE else row.method]
                cells += [fmt(row.tasks[t][m]) for t, ms in names.items() for m in ms]
                cells += ["" if row.method == BASELINE else fmt(row.task_delta.get(t, []), 2)
                          for t in names] if gains else []
                cells.append("" if row.method == BASELINE else fmt(row.delta, 2))
                cells.append(self._flags(row))
                lines.append("| " + " | ".join(cells) + " |")
            seeds = self.seeds[name]
            lines += ["", f"Seeds {', '.join(map(str, seeds))}; metrics of the best epoch on the "
                      f"{self._split(name)} split; mean ± std over seeds."
                      + (" Δm% against the single-task baselines (each task alone on the same "
                         "network and split)." if any(r.method.startswith(BASELINE)
                                                     for r in self.runs if r.spec == name)
                         else ""), ""]
            if gains:
                lines += [RULE if len(seeds) > 1 else "1 seed: no test (a task is flagged better "
                          "or worse than alone only with 2 seeds or more).", ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def _split(self, spec: str) -> str:
        return next((r.split for r in self.runs if r.spec == spec), "val")

    @staticmethod
    def _flags(row: Row) -> str:
        flags = []
        if row.negative():
            flags.append("negative transfer: " + ", ".join(row.negative()))
        if row.better():
            flags.append("better: " + ", ".join(row.better()))
        if row.seesaw():
            flags.append("seesaw")
        return "; ".join(flags)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["spec", "method", "task", "metric", "mean", "std", "seeds", "primary",
                    "delta_task", "delta_task_low", "delta_task_high", "delta_m",
                    "delta_m_std", "negative_transfer", "better", "seesaw"])
        for row in self.rows():
            dm, ds_ = mean_std(row.delta)
            primary = self.primary(row.spec)
            for task, metrics in row.tasks.items():
                dt, _ = mean_std(row.task_delta.get(task, []))
                low, high = interval(row.task_delta.get(task, [])) or (math.nan, math.nan)
                for metric, values in metrics.items():
                    m, s = mean_std(values)
                    w.writerow([row.spec, row.method, task, metric, _num(m), _num(s), len(values),
                                primary[task], _num(dt), _num(low), _num(high), _num(dm),
                                _num(ds_), task in row.negative(), task in row.better(),
                                row.seesaw()])
        return buf.getvalue()

    def plot(self, path: Path) -> None:
        """Per spec: each task's Δ_t% per method (with its 95% interval where there are 2
        seeds, else the seeds' std), else its primary metric. Sized for its content: the
        width grows with the bars, the height with the longest method name (rotated)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = list(self.specs)
        bars = max(len(self.metric_names(n)) * len(self.methods) for n in names)
        label = max((len(m) for m in self.methods), default=8)
        fig = Figure(figsize=(min(24.0, max(6.4, 0.35 * bars + 0.45 * len(self.methods) + 3)),
                              (3.2 + min(3.0, 0.07 * label)) * len(names)))
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
        for ax, name in zip(axes, names):
            self._panel(ax, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    def _panel(self, ax, name: str) -> None:
        """One spec's bars: a bar per (method, task), grouped by method."""
        rows = [r for r in self.rows() if r.spec == name and r.method != BASELINE]
        primary = self.primary(name)
        gains = any(r.task_delta for r in rows)
        width = 0.8 / max(1, len(primary))
        for j, (t, metric) in enumerate(primary.items()):
            values = [r.task_delta.get(t, []) if gains else r.tasks[t].get(metric, [])
                      for r in rows]
            means = [mean_std(v)[0] for v in values]
            err = [m - ci[0] if (ci := interval(v)) else mean_std(v)[1]
                   for m, v in zip(means, values)]
            xs = [i + (j - (len(primary) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, means, width, yerr=err, capsize=3, label=f"{t} ({metric})")
        if gains:
            ax.plot(range(len(rows)), [mean_std(r.delta)[0] for r in rows], "kD", label="Δm%")
            ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(rows)), [r.method for r in rows], rotation=30, ha="right")
        ax.set_ylabel("Δ% vs single-task" if gains else "primary metric")
        n = len(self.seeds[name])
        ax.set_title(f"{name}: " + ("bars: 95% t-interval over seeds" if n > 1 and gains
                                    else "1 seed: no test" if gains else "no baselines"),
                     fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="best")

    def save(self) -> dict[str, Path]:
        paths = {"markdown": self.out_dir / "results.md", "csv": self.out_dir / "results.csv",
                 "plot": self.out_dir / "compare.png"}
        paths["markdown"].write_text(self.markdown())
        paths["csv"].write_text(self.csv())
        self.plot(paths["plot"])
        return paths


def _num(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


# --------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------

def compare(specs: list[str | Path | Checked], methods: list[str] | None = None, *,
            seeds: int = 1, epochs: int | None = None, rows: int | None = None,
            data: str | None = None, baselines: bool = True, out_dir: str | Path = "compare",
            frame=None, log: Callable[[str], None] | None = None) -> Comparison:
    """Train every spec under every method (default: fixed and the spec's own) for `seeds`
    seeds (the spec's `train seed=` and the next ones), plus the single-task baselines, and
    return the :class:`Comparison` (already saved under a new folder in `out_dir`)."""
    from ...training.loop import train
    from ...training.runs import run_folder

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if seeds < 1:
        raise CompareError("--seeds must be at least 1")
    checked = [s if isinstance(s, Checked) else check_file(s, data) for s in specs]
    checked = [with_rows(c.raise_for_errors(), rows) for c in checked]
    names = [c.spec.name for c in checked]
    if len(set(names)) != len(names):
        raise CompareError("two specs have the same model name: " + ", ".join(names))
    wanted = split_methods(methods)
    for m in wanted:
        weighting_setting(m)  # every method word and parameter checked before anything trains
    out = run_folder(out_dir, "compare-" + "-".join(names) if len(names) < 4 else "compare")
    runs_dir = out / "runs"
    plan: list[tuple[Checked, str, int]] = []
    seed_of: dict[str, list[int]] = {}
    order = list(wanted)
    for c in checked:
        base = c.spec.train.params.seed
        seed_of[c.spec.name] = list(range(base, base + seeds))
        own = wanted or list(dict.fromkeys(["fixed", written(c.spec.weighting)]))
        order += [m for m in own if m not in order]
        plan += [(c, m, s) for s in seed_of[c.spec.name] for m in own]
    if baselines:
        plan += [(c, f"{BASELINE}:{t.name}", s) for c in checked for s in seed_of[c.spec.name]
                 for t in c.spec.supervised if len(c.spec.supervised) > 1]
    result = Comparison({c.spec.name: c.spec for c in checked}, order, seed_of, [], out)
    if epochs:
        result.notes.append(f"epochs={epochs} (overriding the specs')")
    if rows:
        result.notes.append(f"rows={rows} (overriding the specs' synthetic data)")
    jsonl = (out / "runs.jsonl").open("w")
    try:
        for i, (c, method, seed) in enumerate(plan, 1):
            t0 = time.perf_counter()
            if method.startswith(BASELINE + ":"):
                spec, graph = single_task(c.spec, method.split(":", 1)[1]), c.graph
            else:
                w = with_overrides(c, weighting=method).raise_for_errors()
                spec, graph = w.spec, w.graph
            r = train(spec, graph, epochs=epochs, out_dir=runs_dir, progress=False, seed=seed,
                      frame=frame)
            target = runs_dir / folder_name(c.spec.name, method, seed)
            r.run_dir = r.run_dir if target.exists() else r.run_dir.rename(target)
            test = r.test_metrics
            run = Run(c.spec.name, method, seed, test or r.best_metrics,
                      "test" if test else "val", str(r.run_dir), time.perf_counter() - t0)
            result.runs.append(run)
            jsonl.write(json.dumps(run.__dict__) + "\n")
            log(f"[{i}/{len(plan)}] {run.spec} {method} seed {seed}: {run.seconds:.1f} s")
    finally:
        jsonl.close()
    result.save()
    return result
