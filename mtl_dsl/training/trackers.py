"""Experiment trackers: `--log tensorboard` and `--log mlflow`, callbacks that copy a run's
records to TensorBoard or MLflow while it trains.

Both packages are optional: :func:`require` checks they can be imported before any training
starts (a missing one is a :class:`TrackerError` naming the pip command), and each is imported
only at the run's first hook. A resumed run appends to the same place: TensorBoard writes into
RUN/tensorboard/ and purges the steps after the resumed one (they were trained again); MLflow
continues the run whose id is kept in RUN/mlflow.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..language.ir import Spec
from .callbacks import Callback
from .runs import atomic_json

# name -> (the module it imports, the pip command that provides it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("torch.utils.tensorboard", "pip install tensorboard"),
    "mlflow": ("mlflow", "pip install 'mtl-dsl[track]'   (or: pip install mlflow-skinny)"),
}
MLFLOW_ID = "mlflow.json"


class TrackerError(Exception):
    """An unknown tracker or one whose package is not installed (a usage error)."""


def parse(values: list[str]) -> list[str]:
    """`--log a --log b` or `--log a,b` as tracker names, each once, in order."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(f"unknown tracker '{name}' in --log: choose from "
                               + ", ".join(TRACKERS))
    return list(dict.fromkeys(names))


def require(names: list[str]) -> None:
    """Fail before training when a tracker's package cannot be imported."""
    for name in names:
        module, pip = TRACKERS[name]
        try:
            found = importlib.util.find_spec(module) is not None
            if name == "tensorboard":  # torch ships the writer; it needs the tensorboard package
                found = found and importlib.util.find_spec("tensorboard") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise TrackerError(f"--log {name} needs a package that is not installed\n"
                               f"  = help: {pip}")


def mlflow_uri(uri: str | None, out: Path) -> str:
    """--log-uri, else MLFLOW_TRACKING_URI, else a file store `mlruns` in the runs folder
    (next to the run folders, so the runs of one spec are one MLflow experiment)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        Path(out).resolve().joinpath("mlruns").as_uri()


def make(names: list[str], uri: str | None, out: Path, experiment: str,
         extras: Callable[[Path], list[Path]] | None = None) -> list[Callback]:
    """The tracker callbacks for `names` (already :func:`parse`-d and :func:`require`-d);
    MLflow connects here, so a wrong URI is a TrackerError before any training."""
    made: dict[str, Callable[[], Callback]] = {
        "tensorboard": TensorBoard,
        "mlflow": lambda: MLflow(mlflow_uri(uri, out), extras).connect(experiment)}
    return [made[n]() for n in names]


def allow_file_store(uri: str) -> None:
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set; mtl's default
    is that store (plain files, nothing more to install), so a file URI opts in, unless the
    user set the variable themselves."""
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def epoch_scalars(record: dict) -> dict[str, float]:
    """An epoch record's numbers as flat tags: val/TASK/METRIC, train/TASK, cosine/A-B.
    A metric that could not be computed (NaN) is left out, not logged as a number."""
    out = {f"val/{t}/{m}": v for t, ms in record["val"].items() for m, v in ms.items()}
    out |= {f"train/{t}": v for t, v in record["train_loss"].items()}
    out |= {f"cosine/{p.replace('|', '-')}": v  # MLflow allows no '|' in a name
            for p, v in record.get("grad_cosine", {}).items()}
    return {k: float(v) for k, v in out.items() if v is not None and v == v}


class TensorBoard(Callback):
    """Scalars into RUN/tensorboard/: step-interval losses and weights, epoch metrics, all
    against the optimizer step (so step and epoch curves share an axis)."""

    def __init__(self) -> None:
        self.writer = None

    def _writer(self, run: Any):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"),
                                        purge_step=run.step or None)
        return self.writer

    def on_step(self, run, record):
        w = self._writer(run)
        for t, v in record["train_loss"].items():
            w.add_scalar(f"step/loss/{t}", v, record["step"])
        for t, v in record["weights"].items():
            w.add_scalar(f"step/weight/{t}", v, record["step"])

    def on_epoch(self, run, record):
        w = self._writer(run)
        for tag, v in epoch_scalars(record).items():
            w.add_scalar(f"epoch/{tag}", v, record["step"])
        w.add_scalar("epoch/epoch", record["epoch"], record["step"])

    def close(self, run):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def spec_params(spec: Spec) -> dict[str, str]:
    """The spec's settings flattened for MLflow: data.*, weighting.*, train.*, task.NAME.*."""
    out = {"model": spec.name}
    for role, setting in (("data", spec.data), ("weighting", spec.weighting),
                          ("train", spec.train)):
        if setting is not None:
            out[f"{role}.kind"] = setting.kind
            out |= {f"{role}.{k}": v for k, v in setting.params.model_dump().items()}
    for t in spec.tasks:
        out[f"task.{t.name}.kind"] = t.kind
        out |= {f"task.{t.name}.{k}": v for k, v in t.params.model_dump().items()}
    out |= {f"override.{k}": v for k, v in spec.overrides}
    return {k: str(v)[:6000] for k, v in out.items()}


class MLflow(Callback):
    """One MLflow run per run folder: the spec (artifact and flattened params), metrics per
    epoch, and at the end metrics.jsonl, the checkpoint, the plot and the `extras` (the
    diagram) as artifacts. Its id is kept in RUN/mlflow.json, so a resume continues it."""

    def __init__(self, uri: str, extras: Callable[[Path], list[Path]] | None = None) -> None:
        self.uri, self.extras = uri, extras
        self.client = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.started = False
        self.ended = False

    def connect(self, experiment: str) -> "MLflow":
        """The client and the experiment (named after the spec), made before training."""
        from mlflow.tracking import MlflowClient

        allow_file_store(self.uri)
        try:
            self.client = client = MlflowClient(tracking_uri=self.uri)
            exp = client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else \
                client.create_experiment(experiment)
        except Exception as err:  # noqa: BLE001 - any store failure is the URI's problem
            raise TrackerError(f"--log mlflow cannot use the tracking URI {self.uri}: "
                               f"{str(err).splitlines()[0]}") from err
        return self

    def _start(self, run: Any) -> None:
        client = self.client
        kept = run.run_dir / MLFLOW_ID
        if kept.is_file():  # a resumed run goes on in the same MLflow run
            self.run_id = json.loads(kept.read_text(encoding="utf-8"))["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            self.started = True
            return
        self.run_id = client.create_run(self.experiment_id, run_name=run.run_dir.name,
                                        tags={"run_dir": str(run.run_dir)}).info.run_id
        atomic_json(kept, {"tracking_uri": self.uri, "run_id": self.run_id})
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in spec_params(run.spec).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(self.run_id, params=params[i:i + 100])
        client.log_artifact(self.run_id, str(run.run_dir / "spec.mtl"))
        self.started = True

    def on_epoch(self, run, record):
        if not self.started:
            self._start(run)
        from mlflow.entities import Metric

        now = int(record["elapsed"] * 1000)
        metrics = [Metric(k, v, now, record["epoch"])
                   for k, v in epoch_scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_start(self, run, first_epoch, total_steps):
        if not self.started:  # a resumed run has no epoch-0 record before this
            self._start(run)

    def on_end(self, run, summary):
        files = [run.run_dir / n for n in ("metrics.jsonl", "checkpoint.pt", "losses.png")]
        files += self.extras(run.run_dir) if self.extras is not None else []
        for path in files:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.ended = True

    def close(self, run):
        if self.started and not self.ended:  # failed or interrupted
            state = run.status.fields.get("status")
            self.client.set_terminated(self.run_id,
                                       status="KILLED" if state == "interrupted" else "FAILED")
