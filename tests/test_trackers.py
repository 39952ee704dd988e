"""--log tensorboard / --log mlflow (mtl_dsl.training.trackers): what lands in each store,
resume continuing the same log, and a missing package refused before training."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from mtl_dsl.tools.cli.main import app
from mtl_dsl.training import trackers
from mtl_dsl.training.loop import train
from test_train import small

SPEC = small(ROOT / "specs" / "mmoe.mtl", rows=300, batch=128)


def scalars(folder) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_step_and_epoch_scalars_and_resume_appends(tmp_path):
    first = train(SPEC, epochs=1, out_dir=tmp_path, progress=False,
                  callbacks=[trackers.TensorBoard()])
    train(SPEC, epochs=2, resume=first.run_dir, progress=False,
          callbacks=[trackers.TensorBoard()])
    found = scalars(first.run_dir / "tensorboard")
    assert {"step/loss/a", "step/loss/b", "step/weight/a", "epoch/val/a/mse",
            "epoch/val/b/mae", "epoch/train/a", "epoch/cosine/a-b", "epoch/epoch"} <= set(found)
    assert [v for _, v in found["epoch/epoch"]] == [0, 1, 2]  # both runs, one folder
    records = [json.loads(x) for x in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    mse = [(r["step"], r["val"]["a"]["mse"]) for r in records if r["type"] == "epoch"]
    assert found["epoch/val/a/mse"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in mse]


def test_mlflow_store_holds_params_metrics_artifacts_and_resume_continues(tmp_path,
                                                                          monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the tracker opts in

    uri = (tmp_path / "mlruns").as_uri()
    extras = lambda run_dir: [run_dir / "spec.mtl"]  # noqa: E731 - stands for the diagram
    first = train(SPEC, epochs=1, out_dir=tmp_path, progress=False,
                  callbacks=[trackers.MLflow(uri, extras).connect(SPEC.name)])
    kept = json.loads((first.run_dir / "mlflow.json").read_text())
    train(SPEC, epochs=2, resume=first.run_dir, progress=False,
          callbacks=[trackers.MLflow(uri).connect(SPEC.name)])
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(kept["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == first.run_dir.name
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["weighting.kind"] == "uncertainty"
    assert run.data.params["task.a.kind"] == "regression"
    history = client.get_metric_history(run.info.run_id, "val/a/mse")
    assert sorted(m.step for m in history) == [0, 1, 2]  # the resume went on in this run
    assert "train/a" in run.data.metrics and "cosine/a-b" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.mtl", "metrics.jsonl", "checkpoint.pt", "losses.png"} <= names
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == SPEC.name
    assert len(client.search_runs([exp.experiment_id])) == 1


class Boom(trackers.Callback):
    def on_epoch(self, run, record):
        if record["epoch"] == 1:
            raise RuntimeError("boom")


def test_a_failed_run_ends_its_mlflow_run_as_failed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    with pytest.raises(RuntimeError, match="boom"):
        train(SPEC, epochs=1, out_dir=tmp_path, progress=False,
              callbacks=[trackers.MLflow(uri).connect(SPEC.name), Boom()])
    kept = json.loads(next(tmp_path.glob("*/mlflow.json")).read_text())
    run = MlflowClient(tracking_uri=uri).get_run(kept["run_id"])
    assert run.info.status == "FAILED"
    assert "val/a/mse" in run.data.metrics  # epoch 0 and 1 were logged before it failed


def test_parse_accepts_repeats_and_commas_and_refuses_unknown_names():
    assert trackers.parse(["tensorboard,mlflow", "mlflow"]) == ["tensorboard", "mlflow"]
    with pytest.raises(trackers.TrackerError, match="unknown tracker 'wandb'"):
        trackers.parse(["wandb"])


def test_mlflow_uri_prefers_the_option_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert trackers.mlflow_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"
    assert trackers.mlflow_uri(None, tmp_path) == "http://tracking:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert trackers.mlflow_uri(None, tmp_path) == (tmp_path / "mlruns").resolve().as_uri()


def test_a_missing_tracker_package_exits_2_with_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "mlflow",
                        ("no_such_module_for_mtl_tests", "pip install mlflow-skinny"))
    out = CliRunner().invoke(app, ["compile", str(ROOT / "specs" / "mmoe.mtl"), "--train",
                                   "--out", str(tmp_path), "--log", "mlflow"])
    assert out.exit_code == 2
    assert "--log mlflow needs a package that is not installed" in out.stderr
    assert "pip install mlflow-skinny" in out.stderr
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


@pytest.mark.parametrize("args, said", [
    (["--train", "--log", "wandb"], "unknown tracker 'wandb'"),
    (["--log", "tensorboard"], "--log needs --train")])
def test_bad_log_options_are_usage_errors(tmp_path, args, said):
    out = CliRunner().invoke(app, ["compile", str(ROOT / "specs" / "mmoe.mtl"),
                                   "--out", str(tmp_path), *args])
    assert out.exit_code == 2 and said in out.stderr


def test_an_unusable_tracking_uri_exits_2_before_training(tmp_path):
    out = CliRunner().invoke(app, ["compile", str(ROOT / "specs" / "mmoe.mtl"), "--train",
                                   "--out", str(tmp_path), "--log", "mlflow",
                                   "--log-uri", "nosuchscheme://x"])
    assert out.exit_code == 2, out.output
    assert "--log mlflow cannot use the tracking URI nosuchscheme://x" in out.stderr
    assert not any(tmp_path.iterdir())
