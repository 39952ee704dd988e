"""The `mtl` commands on a spec: check, render, and compile (and train) it.

Exit codes: 0 ok, 1 a spec or data error (diagnostics on stderr), 2 a usage or I/O error.
Bad input never shows a traceback; set MTL_DEBUG=1 to see one for an internal error. torch
is imported only by the commands that need it. The app and its guard live in
:mod:`mtl_dsl.tools.cli.app`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ...language.diagnostics import MtlError, Source, as_json, errors, render_all
from .app import DataOpt, Exit, SpecArg, _checked, _err, _guard, _json_metrics, command

PLOT_MODES = ("auto", "background", "wait", "off")  # mtl compile --train --plots


@command()
def check(spec: Path = SpecArg, data: Optional[str] = DataOpt,
          as_json_: bool = typer.Option(False, "--json", help="diagnostics as JSON"),
          max_params: float = typer.Option(2e9, "--max-params", min=1,
                                           help="refuse a model with more parameters (E419)"),
          sample: bool = typer.Option(True, "--sample/--no-sample",
                                      help="check the first 10,000 rows of each data file as "
                                           "training would")
          ) -> None:
    """Parse and validate a spec; print every diagnostic at once, and the model's size."""

    def run() -> int:
        from ...data.sample import with_sample
        from ...data.sources import source_columns
        from ...language.check import check_file

        try:
            checked = check_file(spec, data, source_columns, max_params=int(max_params))
            checked = with_sample(checked) if sample else checked
        except MtlError as err:  # a syntax error: reported like the others, with the count
            if as_json_:
                typer.echo(as_json(err.diagnostics, err.source or Source("", str(spec))))
            else:
                n = len(errors(err.diagnostics))
                _err(err.render() + f"\n\n{spec}: {n} error{'s' * (n != 1)}")
            return Exit.SPEC_OR_DATA
        if as_json_:
            typer.echo(as_json(checked.diagnostics, checked.source))
        elif checked.diagnostics:
            _err(render_all(checked.diagnostics, checked.source))
        if not checked.ok:
            if not as_json_:
                n = len(errors(checked.diagnostics))
                _err(f"\n{spec}: {n} error{'s' * (n != 1)}")
            return Exit.SPEC_OR_DATA
        if not as_json_:
            s = checked.spec
            typer.echo(f"ok: {spec}: model '{s.name}', {len(s.tasks)} tasks, "
                       f"{len(s.experts)} expert groups, {len(s.gates)} gates, "
                       f"{len(s.towers)} towers")
            if checked.size is not None:
                typer.echo(f"size: {checked.size.describe()}")
                for line in _tables(checked):  # language/memory.py, docs/scaling.md
                    typer.echo(line)
            if sample:  # hashed tables' collisions on the sampled rows (docs/data.md)
                from ...data.sample import collision_lines

                for line in collision_lines(checked.spec):
                    typer.echo(line)
            if checked.space:  # docs/tuning.md
                typer.echo("\n".join(checked.space.describe()))
        return Exit.OK

    _guard(run)


def _tables(checked) -> list[str]:
    """Each embedding table's memory with its optimizer state, and where it goes under
    the memory budget of one process (`train memory=`, else this machine's memory)."""
    from ...language.memory import budget_bytes, describe, plan

    tables, where = plan(checked.spec, checked.graph, None, budget_bytes(checked.spec))
    return describe(tables, where) if tables else []


@command()
def render(spec: Path = SpecArg,
           output: Path = typer.Option(..., "-o", "--output",
                                       help="diagram file: .svg, .png, .pdf, .dot or .mmd (Mermaid)")) -> None:
    """Draw the task graph with Graphviz (or as a Mermaid flowchart: -o model.mmd); a
    search space is drawn at its first candidates, its searched values shown."""

    def run() -> int:
        from ..drawing.graphviz import render as draw

        checked = _checked(spec, None)
        if not checked.ok or not checked.space:  # errors (and nothing else) stop a space
            checked.raise_for_errors()
        try:
            result = draw(checked.spec, checked.graph, output, checked.space or None)
        except ValueError as err:
            _err(f"error: {err}")
            return Exit.USAGE_OR_IO
        if result.fallback:
            _err(result.message)
        else:
            typer.echo(f"wrote {result.path}")
        return Exit.OK

    _guard(run)


@command(name="compile")
def compile_(spec: Path = SpecArg,
             train: bool = typer.Option(False, "--train", help="train the compiled model"),
             data: Optional[str] = DataOpt,
             epochs: Optional[int] = typer.Option(None, "--epochs", min=1,
                                                  help="override the spec's epochs"),
             out: Path = typer.Option(Path("runs"), "--out", help="folder for run folders"),
             weighting: Optional[str] = typer.Option(
                 None, "--weighting", help="override the spec's weighting method"),
             quiet: bool = typer.Option(False, "--quiet", help="no progress bar, no epoch lines"),
             resume: Optional[Path] = typer.Option(
                 None, "--resume", help="go on with this run folder (with --train)"),
             log: list[str] = typer.Option([], "--log", help="also log to tensorboard and/or "
                                           "mlflow (repeat or comma-separate; with --train)"),
             log_uri: Optional[str] = typer.Option(
                 None, "--log-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                 "else OUT/mlruns)"),
             as_json_: bool = typer.Option(False, "--json", help="summary as JSON"),
             max_params: float = typer.Option(2e9, "--max-params", min=1,
                                              help="refuse a model with more parameters (E419)"),
             nproc: int = typer.Option(1, "--nproc", min=1, help="train in N processes on "
                                       "this machine (torch.distributed; docs/scaling.md)"),
             device: Optional[str] = typer.Option(
                 None, "--device", help="cpu or cuda (default: cuda when available)"),
             plots: str = typer.Option(
                 "auto", "--plots", help="losses.png and experts.png: drawn by a detached "
                 "process after the result (background), before it (wait), not at all (off); "
                 "auto: background on a terminal, else wait")) -> None:
    """Compile a spec to a PyTorch model and print it; with --train, train it too."""
    started = time.perf_counter()
    status = None if quiet or not train else console_status("checking the spec")

    def run() -> int:
        from ... import api
        from ...training import trackers as tracking
        from ...training.signals import Interrupted
        from .launch import in_worker, is_main, launch

        if (resume is not None or log or nproc > 1) and not train:
            flag = "--resume" if resume is not None else "--log" if log else "--nproc"
            _err(f"error: {flag} needs --train")
            return Exit.USAGE_OR_IO
        try:
            names = tracking.parse(log)
            tracking.require(names)
        except tracking.TrackerError as err:
            _err(f"error: {err}")
            return Exit.USAGE_OR_IO
        if plots not in PLOT_MODES:
            _err(f"error: --plots {plots}: use one of {', '.join(PLOT_MODES)}")
            return Exit.USAGE_OR_IO
        drawing = plot_mode(plots, names)
        if device not in (None, "cpu", "cuda") or (device == "cuda" and not _has_cuda()):
            _err(f"error: --device {device}: " + ("no CUDA device here" if device == "cuda"
                                                  else "use cpu or cuda"))
            return Exit.USAGE_OR_IO
        if nproc > 1 and not in_worker():  # each worker runs this command without --nproc
            code, message = launch(nproc, _worker_argv(spec, data, epochs, out, weighting,
                                                       quiet, resume, as_json_, device, drawing)
                                   + [a for name in log for a in ("--log", name)]
                                   + (["--log-uri", log_uri] if log_uri else []))
            if message:
                _err(message)
            return code
        checked = _checked(spec, data, weighting, max_params).raise_for_errors()
        if not train:
            model = api.compile_checked(checked)
            _print_summary(model, as_json_)
            return Exit.OK
        try:
            if names and is_main():
                _say(status, "connecting to the trackers")
            watchers = tracking.make(names, log_uri, out, checked.spec.name, _diagram(checked)) \
                if is_main() else []  # rank 0 alone logs
        except tracking.TrackerError as err:
            _err(f"error: {err}")
            return Exit.USAGE_OR_IO
        try:
            _say(status, "importing torch")
            from ...training import loop  # noqa: F401 - the slow import, under the status line
            from ...training.console import RunConsole
            _say(status, "loading the data and compiling the model")
            shown = [] if quiet or not is_main() else [RunConsole(status)]
            result = api.train_checked(
                checked, epochs=epochs, out_dir=out, progress=False, resume=resume,
                device=device, callbacks=shown + watchers, plots=drawing == "wait")
        except Interrupted as stop:
            if not is_main():  # rank 0 says it (every rank stopped after the same step)
                return stop.code
            again = " ".join(["mtl compile", str(spec), "--train", "--resume", str(stop.run_dir)]
                             + [f"{k} {shlex.quote(str(v))}" for k, v in (
                                 ("--data", data), ("--weighting", weighting),
                                 ("--epochs", epochs)) if v])
            _err(f"interrupted: {stop}\n  resume with: {again}")
            return stop.code
        if is_main():  # rank 0 alone prints (one process: always)
            if drawing == "background":
                from ...training.plots import draw_later
                draw_later(result.run_dir, checked.spec.name)
            _print_result(result, as_json_, time.perf_counter() - started, names, drawing)
        return Exit.OK

    def run_then_stop() -> int:
        try:
            return run()
        finally:  # before _guard prints an error under the spinner
            _say(status, None)

    _guard(run_then_stop)


def plot_mode(asked: str, trackers: list[str]) -> str:
    """background, wait or off. `auto` draws in the background only when stdout is a
    terminal, someone waiting at the prompt: a script, a batch job or a container may end
    with the command, and a detached drawer with it, so they get the plots before it
    returns. Trackers upload the plots, so they always wait."""
    if asked == "off":
        return "off"
    if trackers:
        return "wait"
    if asked == "auto":
        return "background" if sys.stdout.isatty() else "wait"
    return asked


def console_status(text: str):
    """A spinner on stderr while importing and loading (a terminal only), else None; the
    run's console stops it when training starts."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    status = Console(stderr=True).status(text)
    status.start()
    return status


def _say(status, text: str | None) -> None:
    """Update the status line, or stop it (`text` None)."""
    if status is None:
        return
    if text is None:
        status.stop()
    else:
        status.update(text)


def _diagram(checked):
    """What MLflow logs besides the run's own files: the task graph as RUN/diagram.svg
    (a .dot file without Graphviz). A diagram that cannot be drawn is left out."""

    def draw(run_dir: Path) -> list[Path]:
        from ..drawing.graphviz import render as draw_graph

        try:
            return [draw_graph(checked.spec, checked.graph, run_dir / "diagram.svg").path]
        except Exception:  # noqa: BLE001 - a missing diagram never fails a finished run
            return []

    return draw


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _worker_argv(spec, data, epochs, out, weighting, quiet, resume, as_json_, device,
                 plots="auto") -> list[str]:
    """`mtl compile SPEC --train ...` as each worker of `--nproc` runs it."""
    args = ["compile", str(spec), "--train", "--out", str(out), "--plots", plots]
    for flag, value in (("--data", data), ("--epochs", epochs), ("--weighting", weighting),
                        ("--resume", resume), ("--device", device)):
        if value is not None:
            args += [flag, str(value)]
    return args + ["--quiet"] * quiet + ["--json"] * as_json_


def _print_summary(model, as_json_: bool) -> None:
    rows = model.summary()
    if as_json_:
        typer.echo(json.dumps({"parameters": model.param_count(), "blocks": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model.spec.name}: {model.param_count():,} parameters")
    for col in ("block", "kind", "output", "params", "shared by"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        shared = ", ".join(r["shared_by"]) if len(r["shared_by"]) > 1 else "-"
        table.add_row(r["name"], r["kind"], r["shape"], f"{r['params']:,}", shared)
    Console().print(table)


def _print_result(result, as_json_: bool, seconds: float = 0.0, trackers: list[str] = (),
                  plots: str = "wait") -> None:
    from ...training.metrics import notes

    summary = {"run_dir": str(result.run_dir), "best_epoch": result.best_epoch,
               "val": _json_metrics(result.best_metrics),
               "test": _json_metrics(result.test_metrics),
               "notes": {"val": notes(result.best_metrics),
                         "test": notes(result.test_metrics or {})}}
    if as_json_:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"done in {seconds:.1f} s (training {result.seconds:.1f} s)")
    typer.echo(f"run folder: {result.run_dir}")
    typer.echo(f"  checkpoint: {result.checkpoint}")
    if plots != "off":
        typer.echo(f"  plots: {result.run_dir / 'losses.png'}"
                   + (" (drawn in the background, a second or so)" if plots == "background"
                      else ""))
    if "tensorboard" in trackers:
        typer.echo(f"  tensorboard: tensorboard --logdir {result.run_dir / 'tensorboard'}")
    if "mlflow" in trackers:
        kept = json.loads((result.run_dir / "mlflow.json").read_text(encoding="utf-8"))
        typer.echo(f"  mlflow: run {kept['run_id']} at {kept['tracking_uri']}")
    typer.echo(f"best epoch: {result.best_epoch}")
    for task, metrics in result.best_metrics.items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        typer.echo(f"  {task}: {shown}")
    if result.test_metrics:
        typer.echo("test (once, at the best epoch):")
        for task, metrics in result.test_metrics.items():
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            typer.echo(f"  {task}: {shown}")
