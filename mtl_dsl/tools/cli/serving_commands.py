"""The `mtl` commands that use a trained run: predict, eval and export (docs/export.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ...language.diagnostics import MtlError, spec_errors
from .app import Exit, FileOpt, ForceOpt, RunOpt, SpecArg, _checked, _err, _guard, \
    _json_metrics, command


def _run_and_data(spec: Path, checkpoint: Path, data: str, force: bool = False):
    """The checkpoint (refused, unless `force`, when SPEC describes another model), and
    `data` as a source with the spec's reading options."""
    from ..serving import predict as pr

    checked = _checked(spec, None)  # data errors are irrelevant: --data replaces the source
    found = spec_errors(checked.diagnostics)
    if found:
        raise MtlError(found, checked.source)
    ck = pr.open_run(checkpoint)
    pr.check_same_model(checked.spec, ck, force)
    return pr, ck, pr.data_setting(checked.spec, ck, data)


@command()
def predict(spec: Path = SpecArg, checkpoint: Path = RunOpt, data: str = FileOpt,
            out: Path = typer.Option(..., "--out", help="predictions: .csv or .parquet"),
            force: bool = ForceOpt,
            model: Optional[Path] = typer.Option(
                None, "--model", help="predict through this exported .onnx, .pt2 or .py"),
            keep: str = typer.Option(
                "", "--keep", help="data columns to copy to the output, e.g. user_id,item_id"),
            as_json_: bool = typer.Option(False, "--json", help="summary as JSON")) -> None:
    """Write per-task predictions of a trained run for every row of a data file (after the
    --keep columns, so they can be joined back to the input)."""

    def run() -> int:
        if out.suffix not in (".csv", ".parquet"):
            _err(f"error: --out must end in .csv or .parquet, not '{out.suffix or out.name}'")
            return Exit.USAGE_OR_IO
        kept = tuple(c.strip() for c in keep.split(",") if c.strip())
        if model is not None:
            return _predict_exported(spec, checkpoint, model, data, out, as_json_, kept)
        pr, ck, setting = _run_and_data(spec, checkpoint, data, force)
        path, rows = pr.predict_file(ck, setting, out, kept)
        columns = pr.output_columns(ck)
        if as_json_:
            typer.echo(json.dumps({"out": str(path), "rows": rows, "columns": columns}))
        else:
            typer.echo(f"wrote {rows:,} predictions ({', '.join(columns)}) to {path}")
        return Exit.OK

    _guard(run)


def _predict_exported(spec: Path, checkpoint: Path, model: Path, data: str, out: Path,
                      as_json_: bool, keep: tuple[str, ...] = ()) -> int:
    """`predict --model`: through the artefact (ONNX without torch), tools/serving/artefacts.py."""
    from ...language.overrides import data_setting
    from ..serving import artefacts as art
    from ..serving.passthrough import joins_from, kept
    from ..serving.bundle import ServingError

    checked = _checked(spec, None)
    found = spec_errors(checked.diagnostics)
    if found:
        raise MtlError(found, checked.source)
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    try:
        art.check_artefact(model, checked.spec.name)
        setting = joins_from(data_setting(checked.spec.data, data), checked.spec.base_dir)
        preds = art.onnx_file_predictions(model, setting) if model.suffix == ".onnx" else \
            art.torch_file_predictions(model, checkpoint, setting)
    except (art.ArtefactError, ServingError) as err:
        _err(f"error: {err}")
        return Exit.SPEC_OR_DATA
    from ..serving.bundle import write_columns

    path = write_columns(kept(setting, keep, list(preds)) | preds, out)
    rows = len(next(iter(preds.values()))) if preds else 0
    if as_json_:
        typer.echo(json.dumps({"out": str(path), "rows": rows, "columns": list(preds),
                               "model": str(model)}))
    else:
        typer.echo(f"wrote {rows:,} predictions ({', '.join(preds)}) through {model} to {path}")
    return Exit.OK


@command(name="eval")
def eval_(spec: Path = SpecArg, checkpoint: Path = RunOpt, data: str = FileOpt,
          force: bool = ForceOpt,
          as_json_: bool = typer.Option(False, "--json", help="metrics as JSON")) -> None:
    """Report every task's metrics of a trained run on a labelled data file; a metric that
    cannot be computed is shown as `n/a (reason)` (null and a note in --json)."""

    def run() -> int:
        from ...training.metrics import notes

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


@command(name="export")
def export(spec: Path = SpecArg, checkpoint: Path = RunOpt,
           output: Path = typer.Option(..., "-o", "--output",
                                       help="model file: .onnx (+ .bundle.json), .pt2 or .py")
           ) -> None:
    """Export a trained run to ONNX, torch.export or a standalone PyTorch file."""

    def run() -> int:
        from ..serving.export import FORMATS, ExportError, export_run
        from ..serving.predict import open_run

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
