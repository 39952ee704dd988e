"""The compare view of selected runs: `mtl compare`'s table and its paired significance, for
runs already in the runs folder.

Runs are grouped into arms by what they trained (the spec's name, its weighting and the
overrides, from each run's start record); the seeds pair them, as `mtl compare` pairs its runs
(same seed: same split and initial weights). Each task's Δ_t% against the first arm is the
change of its primary metric (tools/experiments/compare.py `primary_metric`, `task_gain`), per
seed, and is flagged better or worse only where the two-sided 95% t-interval of the paired
differences (tools/experiments/significance.py) excludes 0 — the rule of docs/cli.md,
"mtl compare". The numbers are the best epoch's validation metrics, as `mtl runs` shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...language.ir import Spec
from ...training.runs import json_safe
from ..experiments.compare import RULE, fmt, primary_metric, task_gain
from ..experiments.run_table import describe
from ..experiments.significance import interval
from .runs import read_records, run_dir

NO_TEST = ("1 seed per arm: no test (a task is flagged better or worse than the first arm only "
           "with 2 paired seeds or more).")


def _start(folder: Path) -> dict:
    found = read_records(folder)[0]
    return next((r for _, r in found if r.get("type") == "start"), {})


def _arm(start: dict) -> str:
    overrides = ", ".join(f"{k}={v}" for k, v in start.get("overrides") or [])
    return f"{start.get('spec', '?')} · {start.get('weighting', '?')}" + \
        (f" ({overrides})" if overrides else "")


def compare_runs(runs: Path, names: list[str], spec_of: Callable[[Path], Spec | None]
                 ) -> dict:
    """The table of the runs `names` (at least two); `spec_of(run folder)` gives a run's
    spec (its spec.mtl), from which each task's primary metric is read."""
    arms: dict[str, dict] = {}
    for name in dict.fromkeys(names):
        folder = run_dir(runs, name)
        row, start = describe(folder) or {}, _start(folder)
        arm = arms.setdefault(_arm(start), {"label": _arm(start), "runs": [], "seeds": [],
                                            "best": [], "spec": spec_of(folder)})
        arm["runs"].append(name)
        arm["seeds"].append(start.get("seed"))
        arm["best"].append(row.get("best") or {})
    ordered = list(arms.values())
    reference = ordered[0]
    primary = _primary(reference["spec"], reference["best"])
    out = [_arm_table(a, reference, primary) for a in ordered]
    paired = any(len(a["delta"].get(t, {}).get("values", [])) > 1 for a in out for t in primary)
    return json_safe({"arms": out, "reference": reference["label"], "primary": primary,
                  "rule": RULE if paired else NO_TEST})


def _primary(spec: Spec | None, best: list[dict]) -> dict[str, str]:
    """Each task's primary metric (compare.py's rule); without the spec, the first metric
    the runs logged."""
    tasks = dict.fromkeys(t for b in best for t in b)
    names = {t.name for t in spec.tasks} if spec is not None else set()
    if spec is not None and set(tasks) <= names:
        return {t: primary_metric(spec, t) for t in tasks}
    return {t: next((m for b in best for m in b.get(t, {}) if m != "loss"), "loss")
            for t in tasks}


def _arm_table(arm: dict, reference: dict, primary: dict[str, str]) -> dict:
    """One arm: each task's metrics (mean ± std over its runs) and Δ_t% against the
    reference arm, paired by seed, with its interval and flag."""
    metrics: dict[str, dict[str, list[float]]] = {}
    for best in arm["best"]:
        for task, values in best.items():
            for m, v in values.items():
                metrics.setdefault(task, {}).setdefault(m, []).append(v)
    delta = {}
    if arm is not reference:
        base = dict(zip(reference["seeds"], reference["best"]))
        for task, m in primary.items():
            values = [task_gain(best[task], base[seed][task], [m])
                      for seed, best in zip(arm["seeds"], arm["best"])
                      if seed in base and task in best and task in base[seed]]
            ci = interval(values)
            flag = None if ci is None else "better" if ci[0] > 0 else "worse" if ci[1] < 0 \
                else None
            delta[task] = {"values": values, "text": fmt(values, 2), "interval": ci,
                           "flag": flag}
    return {"label": arm["label"], "runs": arm["runs"], "seeds": arm["seeds"],
            "metrics": {t: {m: fmt(v) for m, v in ms.items()} for t, ms in metrics.items()},
            "delta": delta}
