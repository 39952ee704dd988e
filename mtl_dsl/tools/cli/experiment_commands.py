"""The `mtl` commands of experiments: tune (search a spec's search space, docs/tuning.md),
compare (methods x specs x seeds, docs/weighting.md) and runs (the runs folder as a table).

The work is in :mod:`mtl_dsl.tools.experiments`; this module reads the options, prints the
tables with rich, and maps failures to exit codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import DataOpt, Exit, SpecArg, _err, _guard, command


@command()
def tune(spec: Path = SpecArg,
         trials: int = typer.Option(..., "--trials", min=1,
                                    help="trials in all; a resumed tune goes on up to N"),
         jobs: int = typer.Option(1, "--jobs", min=1, help="worker processes sharing the study"),
         seeds: int = typer.Option(1, "--seeds", min=1,
                                   help="runs per trial (seed=, seed+1, ...), scores averaged"),
         out: Optional[Path] = typer.Option(None, "--out",
                                            help="the tune's folder (default tunes/MODEL)"),
         timeout: Optional[float] = typer.Option(None, "--timeout", min=1,
                                                 help="stop starting trials after this many "
                                                      "seconds"),
         prune_startup: int = typer.Option(5, "--prune-startup", min=0,
                                           help="trials run in full before pruning starts")
         ) -> None:
    """Search the spec's choice()/uniform() values on the validation rows (Optuna TPE,
    median pruning); write best.mtl, trials.csv, plots and study.db in the tune's folder."""

    def run() -> int:
        from ...language.check import check_file
        from ...training.signals import Interrupted
        from ..experiments.tune import Setup, tune as run_tune

        name = check_file(spec).spec.name  # an unreadable or non-UTF-8 spec is said here
        text = spec.read_text(encoding="utf-8-sig")
        folder = out or Path("tunes") / name
        setup = Setup(text, str(spec), str(spec), str(folder), seeds, prune_startup)
        try:
            result = run_tune(setup, trials, jobs, timeout)
        except Interrupted as stop:
            _err(f"interrupted: {stop}\n  the study is kept in {folder / 'study.db'}; run the "
                 "same command again to go on (the interrupted trial is run again)")
            return stop.code
        show(result)
        return Exit.OK

    _guard(run)


def show(result) -> None:
    """The trials table, the best trial and its test metrics (n/a when not computable)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    study = result.study
    names = sorted({k for t in study.trials for k in t.params})
    table = Table(title=f"{len(study.trials)} trials ({result.ran} run now); objective: "
                        f"validation {result.monitor} ({'max' if result.maximize else 'min'})")
    for col in ["trial", "state", "value", *names]:
        table.add_column(escape(col))  # `experts e[count]` is not markup
    for t in study.trials:
        value = "" if t.value is None else f"{t.value:.5g}"
        table.add_row(str(t.number), t.state.name.lower(), value,
                      *(escape(_short(t.params.get(n, ""))) for n in names))
    console.print(table)
    if result.best_spec is None:
        console.print("no trial finished; nothing to write (see trials.csv)")
        return
    console.print(f"best: {result.best_spec}")
    for i, metrics in enumerate(result.test):
        shown = "  ".join(f"{task}.{k}=" + ("n/a" if v is None else f"{v:.4f}")
                          for task, m in metrics.items() for k, v in m.items() if k != "loss")
        console.print(f"test (run {i + 1}): {shown or 'no test rows'}")
    console.print(f"folder: {result.out} (study.db, trials.csv, history.png)")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@command()
def compare(specs: list[Path] = typer.Argument(..., help="one or more .mtl specs",
                                               show_default=False),
            method: Optional[list[str]] = typer.Option(
                None, "--method", "-m", help="a weighting, e.g. pcgrad or 'cagrad(c=0.4)'; "
                "repeat it or separate with commas (default: fixed and each spec's own)"),
            seeds: int = typer.Option(1, "--seeds", min=1,
                                      help="seeds per run: the spec's seed= and the next ones"),
            epochs: Optional[int] = typer.Option(None, "--epochs", min=1,
                                                 help="override the specs' epochs"),
            rows: Optional[int] = typer.Option(None, "--rows", min=10,
                                               help="rows of synthetic data (a quick look)"),
            data: Optional[str] = DataOpt,
            baselines: bool = typer.Option(True, "--baselines/--no-baselines",
                                           help="train each task alone for Δm%"),
            out: Path = typer.Option(Path("compare"), "--out", help="folder for the results"),
            quiet: bool = typer.Option(False, "--quiet", help="no line per run"),
            as_json_: bool = typer.Option(False, "--json", help="the runs as JSON")) -> None:
    """Train specs under several weighting methods and seeds; tabulate metrics and Δm%."""

    def run() -> int:
        from ..experiments.compare import CompareError, compare as run_all

        try:
            result = run_all(list(specs), method, seeds=seeds, epochs=epochs, rows=rows,
                             data=data, baselines=baselines, out_dir=out,
                             log=(lambda _: None) if quiet else _err)
        except CompareError as err:
            _err(f"error: {err}")
            return Exit.USAGE_OR_IO
        if as_json_:
            typer.echo(json.dumps({"out": str(result.out_dir),
                                   "runs": [r.__dict__ for r in result.runs]}, indent=2))
            return Exit.OK
        typer.echo(result.markdown())
        for name in ("results.md", "results.csv", "compare.png"):
            typer.echo(f"wrote {result.out_dir / name}")
        return Exit.OK

    _guard(run)


@command()
def runs(folder: Path = typer.Argument(Path("runs"), help="a folder of run folders"),
         as_json_: bool = typer.Option(False, "--json", help="the runs as JSON")) -> None:
    """List run folders: status, epochs done, best metrics, duration, size."""

    def run() -> int:
        from ..experiments import run_table as listing

        if not folder.is_dir():
            _err(f"error: no such folder: {folder}")
            return Exit.USAGE_OR_IO
        rows = listing.list_runs(folder)
        if as_json_:
            typer.echo(json.dumps(rows, indent=2))
        elif not rows:
            typer.echo(f"no runs in {folder}")
        else:
            from rich.console import Console

            Console().print(listing.table(rows, f"runs in {folder}"))
        return Exit.OK

    _guard(run)
