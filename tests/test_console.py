"""The run's console (mtl_dsl.training.console) and `mtl compile --train`'s summary."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from conftest import ROOT, wait_for_file
from mtl_dsl.tools.cli.main import app
from mtl_dsl.training.console import RunConsole, fit

TINY = """model tiny
data synthetic.correlated(rows=600, correlation=0.8, seed=1)
feature x = dense(8)
label y1, y2
experts e[2] = mlp(x, 8)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 4)
tower t_b = mlp(g_b, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
train epochs=2 batch=128 lr=1e-3 seed=7
"""


def mtl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a pipe sees it: stderr is not a terminal."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def epoch(n: int, elapsed: float, val_a: float) -> dict:
    return {"type": "epoch", "epoch": n, "step": 4 * n, "elapsed": elapsed,
            "train_loss": {"a": 1.5 / (n or 1), "b": 2.0} if n else {},
            "weights": {"a": 1.0, "b": 1.0},
            "val": {"a": {"loss": 1.0, "auc": val_a, "logloss": 1.0},
                    "b": {"loss": 2.5}}}


def test_plain_lines_carry_losses_metrics_and_epoch_time():
    out = io.StringIO()
    console = RunConsole(stream=out)
    hashed = {"u": {"values": 12, "buckets": 10, "colliding": 4, "rate": 1 / 3,
                    "rows_rate": 0.25}}  # a hashed table's collisions (data/statistics.py)
    run = SimpleNamespace(epochs=2, step=0, elapsed=lambda: 1.0, data=SimpleNamespace(
        encoders=SimpleNamespace(hashing=lambda: hashed)))
    console.on_epoch(run, epoch(0, 1.0, 0.5))
    console.on_start(run, 1, 8)
    console.on_epoch(run, epoch(1, 3.5, 0.75))
    console.on_epoch(run, epoch(2, 4.75, float("nan")))
    console.close(run)
    lines = out.getvalue().splitlines()
    assert lines == [
        "epoch 0/2  val a.auc=0.5 a.logloss=1 b.loss=2.5  time -",
        "hash u: 12 values of the training rows in 10 buckets; 33.3% share a bucket (25.0% of "
        "the rows)",
        "epoch 1/2  train a=1.5 b=2  val a.auc=0.75 a.logloss=1 b.loss=2.5  time 2.5s",
        "epoch 2/2  train a=0.75 b=2  val a.auc=n/a a.logloss=1 b.loss=2.5  time 1.2s"]


def test_a_narrow_terminal_keeps_each_tasks_first_metric():
    cols = ["epoch", "train a", "a.auc", "a.logloss", "b.mse", "b.mae", "time"]
    assert fit(cols, 200) == cols
    assert fit(cols, 40) == ["epoch", "train a", "a.auc", "b.mse", "time"]


def test_status_is_stopped_when_training_starts():
    class Status:
        stopped = 0

        def stop(self):
            self.stopped += 1

    status = Status()
    console = RunConsole(status=status, stream=io.StringIO())
    console.on_epoch(SimpleNamespace(epochs=1), epoch(0, 0.5, 0.5))
    console.close(None)
    assert status.stopped == 1


def test_cli_prints_epoch_lines_and_a_summary(tmp_path):
    (tmp_path / "tiny.mtl").write_text(TINY)
    out = mtl("compile", "tiny.mtl", "--train", "--out", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    epochs = [x for x in out.stderr.splitlines() if x.startswith("epoch ")]
    assert [x.split()[1] for x in epochs] == ["0/2", "1/2", "2/2"]
    assert all(" val a.mse=" in x and " b.mae=" in x for x in epochs)
    assert " train a=" in epochs[1] and epochs[1].endswith("s")
    summary = out.stdout.splitlines()
    assert summary[0].startswith("done in ") and "(training " in summary[0]
    run = Path(summary[1].removeprefix("run folder: "))  # as given: relative to the cwd
    assert run.parent == Path("runs")
    assert summary[2] == f"  checkpoint: {run / 'checkpoint.pt'}"
    assert summary[3] == f"  plots: {run / 'losses.png'}"  # no terminal: drawn before
    assert (tmp_path / run / "checkpoint.pt").is_file()
    assert (tmp_path / run / "losses.png").is_file()


def test_plots_in_the_background_appear_whole_after_the_result(tmp_path):
    (tmp_path / "tiny.mtl").write_text(TINY.replace("epochs=2", "epochs=1"))
    out = mtl("compile", "tiny.mtl", "--train", "--out", "runs", "--quiet", "--plots",
              "background", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = Path(out.stdout.splitlines()[1].removeprefix("run folder: "))
    assert f"  plots: {run / 'losses.png'} (drawn in the background, a second or so)" \
        in out.stdout.splitlines()
    for plot in ("losses.png", "experts.png"):  # the detached drawer's work, in this order
        assert wait_for_file(tmp_path / run / plot)
    assert not (tmp_path / run / "plots.log").exists()  # written only when drawing failed
    assert not list((tmp_path / run).glob(".*.tmp"))  # each PNG renamed into place whole


def test_plots_wait_draws_before_the_result_and_off_draws_none(tmp_path):
    (tmp_path / "tiny.mtl").write_text(TINY.replace("epochs=2", "epochs=1"))
    waited = mtl("compile", "tiny.mtl", "--train", "--out", "w", "--quiet", "--plots", "wait",
                 cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    run = next((tmp_path / "w").iterdir())
    assert (run / "losses.png").is_file()  # there when the command returns
    assert f"  plots: {Path('w') / run.name / 'losses.png'}" in waited.stdout.splitlines()
    off = mtl("compile", "tiny.mtl", "--train", "--out", "o", "--quiet", "--plots", "off",
              cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    run = next((tmp_path / "o").iterdir())
    time.sleep(1.0)
    assert not (run / "losses.png").exists() and "plots:" not in off.stdout
    bad = mtl("compile", "tiny.mtl", "--train", "--plots", "later", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--plots later: use one of auto, background, wait, off" in bad.stderr


def test_plots_auto_draws_in_the_background_only_for_a_terminal(monkeypatch):
    from mtl_dsl.tools.cli.spec_commands import plot_mode

    for tty, expected in ((True, "background"), (False, "wait")):
        monkeypatch.setattr(sys.stdout, "isatty", lambda tty=tty: tty)
        assert plot_mode("auto", []) == expected
        assert plot_mode("auto", ["mlflow"]) == "wait"  # trackers upload the plots
        assert plot_mode("off", ["mlflow"]) == "off"
        assert plot_mode("background", []) == "background"


def test_quiet_json_prints_only_the_json(tmp_path):
    (tmp_path / "tiny.mtl").write_text(TINY.replace("epochs=2", "epochs=1"))
    quiet = CliRunner().invoke(app, ["compile", str(tmp_path / "tiny.mtl"), "--train",
                                     "--out", str(tmp_path / "runs"), "--quiet", "--json"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert set(json.loads(quiet.stdout)) == {"run_dir", "best_epoch", "val", "test", "notes"}
