"""`mtl tune`: search a spec's search space with Optuna (docs/tuning.md).

The space is the language's plain description (language/space.py); each trial writes its
chosen values into the spec text and trains that ordinary spec with the test rows left out
(`train(test=False)`), scored by `train monitor=` on the validation rows (the metric's
direction from the registry; no monitor: the sum of the validation losses, lower better).
A TPE sampler seeded by the spec's seed proposes; a median pruner stops a trial whose
per-epoch validation score is below the median of earlier trials at that epoch. The study
lives in `study.db` (SQLite) in the tune's folder, so running the same command again goes
on up to N trials, and J worker processes share it. The test rows are read once, at the
end, for the best trial's runs.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ...api import check_text
from ...language.check import Checked
from ...language.diagnostics import DataError, Diagnostic, MtlError, errors
from ...language.registry import higher_is_better
from ...language.space import Dimension, Space, number_text, substitute
from ...training.callbacks import Callback

# What counts toward --trials: a failed or interrupted trial is made up for when resumed.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SPACE_FILE = "space.mtl"  # the searched spec as given; a resumed tune must search the same


@dataclass(frozen=True)
class Setup:
    """What every trial needs, picklable so that worker processes get the same."""

    text: str
    name: str
    path: str | None
    out: str
    seeds: int
    prune_startup: int = 5

    def checked(self, text: str | None = None) -> Checked:
        return check_text(self.text if text is None else text, self.name, self.path)

    @property
    def storage(self) -> str:
        return f"sqlite:///{Path(self.out).resolve() / 'study.db'}"


@dataclass
class Tuned:
    """The outcome of a tune: the study, the best trial and its test metrics per seed."""

    study: optuna.Study
    out: Path
    monitor: str
    maximize: bool
    best_spec: Path | None = None
    test: list[dict] = field(default_factory=list)  # one {task: {metric: value}} per seed
    ran: int = 0  # trials this invocation ran


def monitor_of(checked: Checked) -> tuple[str | None, bool]:
    """The objective (`TASK.METRIC` or None: the sum of validation losses) and whether
    higher is better, from the registry's metric facts."""
    monitor = checked.spec.train.params.monitor
    if not monitor:
        return None, False
    return monitor, higher_is_better(monitor.partition(".")[2])


def score(val: dict[str, dict[str, float]], monitor: str | None, trained: list[str]) -> float:
    """The objective on one epoch's validation metrics (NaN when it cannot be computed)."""
    if monitor is None:
        return float(sum(val[t]["loss"] for t in trained))
    task, _, metric = monitor.partition(".")
    return float(val[task][metric])


class Pruning(Callback):
    """Reports the monitor each epoch to the trial; raises TrialPruned when the median
    pruner says this trial is behind the earlier ones at the same epoch."""

    def __init__(self, trial: optuna.Trial, monitor: str | None, trained: list[str]):
        self.trial, self.monitor, self.trained = trial, monitor, trained

    def on_epoch(self, run, record: dict) -> None:
        epoch = record["epoch"]
        value = score(record["val"], self.monitor, self.trained)
        if epoch == 0 or not math.isfinite(value):
            return
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {value:.4g}")


def suggest(trial: optuna.Trial, d: Dimension) -> str | int | float:
    """One dimension's value for this trial: the option's text, or a number."""
    if d.kind == "choice":
        return trial.suggest_categorical(d.name, list(d.options))
    if d.kind == "int_uniform":
        return trial.suggest_int(d.name, int(d.low), int(d.high))
    return trial.suggest_float(d.name, d.low, d.high, log=d.kind == "loguniform")


class Objective:
    """One trial: the chosen values written in, `seeds` runs without the test rows, the
    mean of their best validation scores."""

    def __init__(self, setup: Setup):
        self.setup = setup
        checked = setup.checked()
        self.space: Space = checked.space
        self.monitor, _ = monitor_of(checked)

    def __call__(self, trial: optuna.Trial) -> float:
        from ...training.loop import train

        chosen = {d.name: suggest(trial, d) for d in self.space.dims}
        text = substitute(self.setup.text, self.space, chosen)
        trial.set_user_attr("spec", text)
        checked = self.setup.checked(text).raise_for_errors()
        trained = [t.name for t in checked.spec.supervised]
        scores, runs = [], []
        seed0 = checked.spec.train.params.seed
        for i in range(self.setup.seeds):
            watch = [Pruning(trial, self.monitor, trained)] if i == 0 else []
            result = train(checked.spec, checked.graph, progress=False, seed=seed0 + i,
                           out_dir=Path(self.setup.out) / "trials" / f"{trial.number:04d}",
                           callbacks=watch, test=False)
            scores.append(score(result.best_metrics, self.monitor, trained))
            runs.append(str(result.run_dir))
        trial.set_user_attr("runs", runs)
        trial.set_user_attr("scores", scores)
        value = statistics.fmean(scores)
        if not math.isfinite(value):
            raise DataError(f"trial {trial.number}: the objective {self.monitor} cannot be "
                            "computed on the validation rows", code="E722",
                            hint="the trial is marked failed and the search goes on")
        return value


def study_of(setup: Setup, maximize: bool, seed: int) -> optuna.Study:
    """The study in `study.db`, created or loaded (a resumed tune goes on with it)."""
    storage = optuna.storages.RDBStorage(
        setup.storage, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.create_study(
        study_name="tune", storage=storage, load_if_exists=True,
        direction="maximize" if maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=setup.prune_startup))


def _work(setup: Setup, maximize: bool, seed: int, n: int, timeout: float | None) -> None:
    """A worker process: `n` trials of the shared study (each worker seeds its sampler
    apart, so that workers do not propose the same values)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = study_of(setup, maximize, seed)
    study.optimize(Objective(setup), n_trials=n, timeout=timeout, catch=(MtlError, DataError))


def prepare_folder(setup: Setup) -> None:
    """The tune's folder; a folder holding another spec's study is refused, not reused."""
    out = Path(setup.out)
    kept = out / SPACE_FILE
    if kept.is_file() and kept.read_text(encoding="utf-8") != setup.text:
        raise MtlError([Diagnostic(
            "E721", f"{out} holds the tune of another spec (its {SPACE_FILE} differs)",
            hint="give another --out, or the same spec to go on with that tune")])
    out.mkdir(parents=True, exist_ok=True)
    if not kept.is_file():
        kept.write_text(setup.text, encoding="utf-8")


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def tune(setup: Setup, trials: int, jobs: int = 1, timeout: float | None = None) -> Tuned:
    """Run the study up to `trials` finished trials (counting a resumed study's), then
    write best.mtl, trials.csv, the plots and the best trial's test metrics."""
    checked = setup.checked()
    if errors(checked.diagnostics):
        raise MtlError(errors(checked.diagnostics), checked.source)
    if not checked.space:
        raise MtlError([Diagnostic(
            "E721", "the spec has no search space to tune",
            hint="write e.g. lr=loguniform(1e-4, 1e-2) or dim=choice(4, 8) where a value goes; "
                 "train a plain spec with `mtl compile --train`")], checked.source)
    prepare_folder(setup)
    monitor, maximize = monitor_of(checked)
    seed = checked.spec.train.params.seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = study_of(setup, maximize, seed)
    before = finished(study)
    left = max(0, trials - before)
    shares = [left // jobs + (i < left % jobs) for i in range(jobs)]
    if jobs == 1 or left <= 1:
        study.optimize(Objective(setup), n_trials=left, timeout=timeout,
                       catch=(MtlError, DataError))
    elif left:
        context = multiprocessing.get_context("spawn")  # torch and SQLite do not fork well
        workers = [context.Process(target=_work, args=(setup, maximize, seed + 1000 * i, n,
                                                       timeout)) for i, n in enumerate(shares) if n]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    result = Tuned(study, Path(setup.out), monitor or "sum of the losses", maximize,
                   ran=finished(study) - before)
    write_outputs(setup, checked.space, result)
    return result


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if done else None


def write_outputs(setup: Setup, space: Space, result: Tuned) -> None:
    """best.mtl, trials.csv, the plots, and the best trial evaluated once on the test rows."""
    out = result.out
    write_table(result.study, out / "trials.csv")
    best = best_trial(result.study)
    if best is None:
        return
    chosen = {d.name: best.params[d.name] for d in space.dims}
    text = substitute(setup.text, space, chosen)
    head = (f"# chosen by mtl tune: trial {best.number} of {len(result.study.trials)}, "
            f"validation {result.monitor} = {number_text(float(best.value))}\n")
    result.best_spec = out / "best.mtl"
    result.best_spec.write_text(head + text, encoding="utf-8")
    test_file = out / "best_test.json"
    if test_file.is_file() and json.loads(test_file.read_text())["trial"] == best.number:
        result.test = json.loads(test_file.read_text())["test"]  # read once per best trial
    else:
        result.test = [test_metrics(Path(run)) for run in best.user_attrs.get("runs", [])]
        test_file.write_text(json.dumps({"trial": best.number, "runs": best.user_attrs.get("runs", []),
                                         "test": result.test}, indent=2))
    plot(result.study, out, f"validation {result.monitor}")


def test_metrics(run_dir: Path) -> dict:
    """A finished run's best weights on its test rows (the split of its own seed)."""
    from ...data.prepare import prepare
    from ...training.checkpoints import load_checkpoint
    from ...training.metrics import evaluate

    ck = load_checkpoint(run_dir / "checkpoint.pt")
    data = prepare(ck.spec, None, ck.meta["seed"])
    if data.test is None:
        return {}
    metrics = evaluate(ck.model, data.test, list(ck.spec.tasks))
    return {t: {k: None if v != v else float(v) for k, v in m.items()}  # n/a: null, not NaN
            for t, m in metrics.items()}


def write_table(study: optuna.Study, path: Path) -> None:
    """Every trial: number, state, value, its values and how long it took."""
    import csv

    names = sorted({k for t in study.trials for k in t.params})
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial", "state", "value", *names, "seconds"])
        for t in study.trials:
            seconds = t.duration.total_seconds() if t.duration else ""
            w.writerow([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                        *(t.params.get(n, "") for n in names), seconds])


def plot(study: optuna.Study, out: Path, label: str = "validation objective") -> None:
    """history.png (the objective per trial, and the best so far) and importance.png
    (fANOVA parameter importances, from 2 finished trials on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = [t.number for t in done], [t.value for t in done]
    best = [max(ys[:i + 1]) if study.direction.name == "MAXIMIZE" else min(ys[:i + 1])
            for i in range(len(ys))]
    ax.plot(xs, ys, "o", label="trial")
    ax.step(xs, best, "-", where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=100)
    plt.close(fig)
    if len(done) < 2 or not done[0].params:
        return
    try:
        with warnings.catch_warnings():  # few trials: "importances will be equal" is expected
            warnings.simplefilter("ignore")
            importance = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every trial chose the same values
        return
    fig, ax = plt.subplots(figsize=(6, 1 + 0.4 * len(importance)))
    ax.barh(list(importance)[::-1], list(importance.values())[::-1])
    ax.set_xlabel("importance (fANOVA)")
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=100)
    plt.close(fig)
