"""The `mtl` command: check, render, compile and train a spec.

Exit codes: 0 ok, 1 a spec or data error (diagnostics on stderr), 2 a usage or
I/O error. Bad input never shows a traceback; set MTL_DEBUG=1 to see one for
an internal error. torch is imported only by the commands that need it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from enum import IntEnum
from pathlib import Path
from typing import Callable, Optional

import typer

from ..language.diagnostics import MtlError, Source, as_json, errors, render_all, spec_errors


class Exit(IntEnum):
    OK = 0
    SPEC_OR_DATA = 1
    USAGE_OR_IO = 2
    INTERNAL = 3


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mtl-dsl: multi-task learning models from a short spec.")

SpecArg = typer.Argument(..., help="the .mtl spec file", show_default=False)
DataOpt = typer.Option(None, "--data", help="train on this CSV/Parquet file instead")


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _guard(run: Callable[[], int]) -> None:
    """Turn every expected failure into a message and an exit code."""
    try:
        code = run()
    except MtlError as err:
        _err(err.render())
        code = Exit.SPEC_OR_DATA
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        _err(f"error: {err}")
        code = Exit.USAGE_OR_IO
    except KeyboardInterrupt:
        _err("interrupted")
        code = 130
    except Exception as err:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("MTL_DEBUG"):
            traceback.print_exc()
        _err(f"internal error: {type(err).__name__}: {err}\n"
             "  = help: this is a bug in mtl-dsl; rerun with MTL_DEBUG=1 for the traceback")
        code = Exit.INTERNAL
    raise typer.Exit(int(code))


def _checked(spec: Path, data: Optional[str], weighting: Optional[str] = None):
    from ..api import check_file

    return check_file(spec, data, weighting)


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


RunOpt = typer.Option(..., "--checkpoint", help="a run folder (or its checkpoint.pt)")
FileOpt = typer.Option(..., "--data", help="a CSV/Parquet file, read with the spec's options")
ForceOpt = typer.Option(False, "--force", help="use the checkpoint even if SPEC describes "
                        "another model (the checkpoint's own model is used)")


def _run_and_data(spec: Path, checkpoint: Path, data: str, force: bool = False):
    """The checkpoint (refused, unless `force`, when SPEC describes another model), and
    `data` as a source with the spec's reading options."""
    from . import predict as pr

    checked = _checked(spec, None)  # data errors are irrelevant: --data replaces the source
    found = spec_errors(checked.diagnostics)
    if found:
        raise MtlError(found, checked.source)
    ck = pr.open_run(checkpoint)
    pr.check_same_model(checked.spec, ck, force)
    return pr, ck, pr.data_setting(checked.spec, ck, data)


@app.command()
def predict(spec: Path = SpecArg, checkpoint: Path = RunOpt, data: str = FileOpt,
            out: Path = typer.Option(..., "--out", help="predictions: .csv or .parquet"),
            force: bool = ForceOpt,
            model: Optional[Path] = typer.Option(
                None, "--model", help="predict through this exported .onnx, .pt2 or .py"),
            as_json_: bool = typer.Option(False, "--json", help="summary as JSON")) -> None:
    """Write per-task predictions of a trained run for every row of a data file."""

    def run() -> int:
        if out.suffix not in (".csv", ".parquet"):
            _err(f"error: --out must end in .csv or .parquet, not '{out.suffix or out.name}'")
            return Exit.USAGE_OR_IO
        if model is not None:
            return _predict_exported(spec, checkpoint, model, data, out, as_json_)
        pr, ck, setting = _run_and_data(spec, checkpoint, data, force)
        path, rows = pr.predict_file(ck, setting, out)
        columns = [c for t in ck.spec.tasks for c in ([t.name] if t.out_dim == 1 else
                                                      [f"{t.name}_{i}" for i in range(t.out_dim)])]
        if as_json_:
            typer.echo(json.dumps({"out": str(path), "rows": rows, "columns": columns}))
        else:
            typer.echo(f"wrote {rows:,} predictions ({', '.join(columns)}) to {path}")
        return Exit.OK

    _guard(run)


def _predict_exported(spec: Path, checkpoint: Path, model: Path, data: str, out: Path,
                      as_json_: bool) -> int:
    """`predict --model`: through the artefact (ONNX without torch), tools/artefacts.py."""
    from ..language.overrides import data_setting
    from . import artefacts as art
    from .serving import ServingError

    checked = _checked(spec, None)
    found = spec_errors(checked.diagnostics)
    if found:
        raise MtlError(found, checked.source)
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    try:
        art.check_artefact(model, checked.spec.name)
        setting = data_setting(checked.spec.data, data)
        preds = art.onnx_file_predictions(model, setting) if model.suffix == ".onnx" else \
            art.torch_file_predictions(model, checkpoint, setting)
    except (art.ArtefactError, ServingError) as err:
        _err(f"error: {err}")
        return Exit.SPEC_OR_DATA
    from .serving import write_columns

    path = write_columns(preds, out)
    rows = len(next(iter(preds.values()))) if preds else 0
    if as_json_:
        typer.echo(json.dumps({"out": str(path), "rows": rows, "columns": list(preds),
                               "model": str(model)}))
    else:
        typer.echo(f"wrote {rows:,} predictions ({', '.join(preds)}) through {model} to {path}")
    return Exit.OK


@app.command(name="export")
def export(spec: Path = SpecArg, checkpoint: Path = RunOpt,
           output: Path = typer.Option(..., "-o", "--output",
                                       help="model file: .onnx (+ .bundle.json), .pt2 or .py")
           ) -> None:
    """Export a trained run to ONNX, torch.export or a standalone PyTorch file."""

    def run() -> int:
        from .export import FORMATS, ExportError, export_run
        from .predict import open_run

        if output.suffix not in FORMATS:
            _err(f"error: -o must end in {', '.join(FORMATS)}, not "
                 f"'{output.suffix or output.name}'")
            return Exit.USAGE_OR_IO
        checked = _checked(spec, None)
        found = spec_errors(checked.diagnostics)
        if found:
            raise MtlError(found, checked.source)
        ck = open_run(checkpoint)
        if ck.spec.name != checked.spec.name:
            _err(f"error: {checkpoint} holds model '{ck.spec.name}', not '{checked.spec.name}'")
            return Exit.SPEC_OR_DATA
        try:
            path = export_run(ck, output, checked.source.text)
        except ExportError as err:
            _err(f"error: {err}")
            return Exit.SPEC_OR_DATA
        typer.echo(f"wrote {path}")
        return Exit.OK

    _guard(run)


@app.command(name="eval")
def eval_(spec: Path = SpecArg, checkpoint: Path = RunOpt, data: str = FileOpt,
          force: bool = ForceOpt,
          as_json_: bool = typer.Option(False, "--json", help="metrics as JSON")) -> None:
    """Report every task's metrics of a trained run on a labelled data file; a metric that
    cannot be computed is shown as `n/a (reason)` (null and a note in --json)."""

    def run() -> int:
        from ..training.metrics import notes

        pr, ck, setting = _run_and_data(spec, checkpoint, data, force)
        metrics, rows = pr.evaluate_file(ck, setting)
        if as_json_:
            typer.echo(json.dumps({"rows": rows, "metrics": _json_metrics(metrics),
                                   "notes": notes(metrics)}, indent=2))
            return Exit.OK
        typer.echo(f"{rows:,} rows of {data}")
        for task, values in metrics.items():
            shown = "  ".join(f"{k}={v:.4f}" for k, v in values.items())
            typer.echo(f"  {task}: {shown}")
        return Exit.OK

    _guard(run)


@app.command()
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
        from .compare import CompareError, compare as run_all

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


@app.command()
def runs(folder: Path = typer.Argument(Path("runs"), help="a folder of run folders"),
         as_json_: bool = typer.Option(False, "--json", help="the runs as JSON")) -> None:
    """List run folders: status, epochs done, best metrics, duration, size."""

    def run() -> int:
        from . import runs as listing

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


def _json_metrics(metrics: dict | None) -> dict | None:
    """Metrics for JSON: one that cannot be computed is null (its reason is in the notes),
    never a NaN, which JSON does not have."""
    if metrics is None:
        return None
    return {t: {k: None if v != v else v for k, v in m.items()} for t, m in metrics.items()}


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
