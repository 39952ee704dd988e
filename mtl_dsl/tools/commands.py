"""The `mtl` command: check, render, compile and train a spec.

Exit codes: 0 ok, 1 a spec or data error (diagnostics on stderr), 2 a usage or
I/O error. Bad input never shows a traceback; set MTL_DEBUG=1 to see one for
an internal error. torch is imported only by the commands that need it. The app and
its guard live in :mod:`mtl_dsl.tools.cli_app`; the commands on finished runs in
:mod:`mtl_dsl.tools.commands_runs`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from ..language.diagnostics import MtlError, Source, as_json, errors, render_all
from . import commands_runs  # noqa: F401 - registers predict, export, eval, compare, runs
from . import commands_tune  # noqa: F401 - registers tune
from .cli_app import DataOpt, Exit, SpecArg, _checked, _err, _guard, _json_metrics, app


@app.command()
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
        from ..data.sample import with_sample
        from ..data.sources import source_columns
        from ..language.check import check_file

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
            if checked.space:  # docs/tuning.md
                typer.echo("\n".join(checked.space.describe()))
        return Exit.OK

    _guard(run)


@app.command()
def render(spec: Path = SpecArg,
           output: Path = typer.Option(..., "-o", "--output",
                                       help="diagram file: .svg, .png, .pdf or .dot")) -> None:
    """Draw the task graph with Graphviz."""

    def run() -> int:
        from .render import render as draw

        checked = _checked(spec, None).raise_for_errors()
        try:
            result = draw(checked.spec, checked.graph, output)
        except ValueError as err:
            _err(f"error: {err}")
            return Exit.USAGE_OR_IO
        if result.fallback:
            _err(result.message)
        else:
            typer.echo(f"wrote {result.path}")
        return Exit.OK

    _guard(run)


@app.command(name="compile")
def compile_(spec: Path = SpecArg,
             train: bool = typer.Option(False, "--train", help="train the compiled model"),
             data: Optional[str] = DataOpt,
             epochs: Optional[int] = typer.Option(None, "--epochs", min=1,
                                                  help="override the spec's epochs"),
             out: Path = typer.Option(Path("runs"), "--out", help="folder for run folders"),
             weighting: Optional[str] = typer.Option(
                 None, "--weighting", help="override the spec's weighting method"),
             quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
             resume: Optional[Path] = typer.Option(
                 None, "--resume", help="go on with this run folder (with --train)"),
             as_json_: bool = typer.Option(False, "--json", help="summary as JSON")) -> None:
    """Compile a spec to a PyTorch model and print it; with --train, train it too."""

    def run() -> int:
        from .. import api
        from ..training.signals import Interrupted

        if resume is not None and not train:
            _err("error: --resume needs --train")
            return Exit.USAGE_OR_IO
        checked = _checked(spec, data, weighting).raise_for_errors()
        if not train:
            model = api.compile_checked(checked)
            _print_summary(model, as_json_)
            return Exit.OK
        try:
            result = api.train_checked(checked, epochs=epochs, out_dir=out,
                                       progress=not quiet, resume=resume)
        except Interrupted as stop:
            again = " ".join(["mtl compile", str(spec), "--train", "--resume", str(stop.run_dir)]
                             + [f"{k} {shlex.quote(str(v))}" for k, v in (
                                 ("--data", data), ("--weighting", weighting),
                                 ("--epochs", epochs)) if v])
            _err(f"interrupted: {stop}\n  resume with: {again}")
            return stop.code
        _print_result(result, as_json_)
        return Exit.OK

    _guard(run)


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


def _print_result(result, as_json_: bool) -> None:
    from ..training.metrics import notes

    summary = {"run_dir": str(result.run_dir), "best_epoch": result.best_epoch,
               "val": _json_metrics(result.best_metrics),
               "test": _json_metrics(result.test_metrics),
               "notes": {"val": notes(result.best_metrics),
                         "test": notes(result.test_metrics or {})}}
    if as_json_:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"run folder: {result.run_dir}")
    typer.echo(f"best epoch: {result.best_epoch}")
    for task, metrics in result.best_metrics.items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        typer.echo(f"  {task}: {shown}")
    if result.test_metrics:
        typer.echo("test (once, at the best epoch):")
        for task, metrics in result.test_metrics.items():
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            typer.echo(f"  {task}: {shown}")


def main() -> None:
    """Entry point of the `mtl` script."""
    try:
        app(standalone_mode=True)
    except SystemExit as e:
        # click reports usage errors with exit code 2 already; keep its code
        sys.exit(e.code)


if __name__ == "__main__":
    main()
