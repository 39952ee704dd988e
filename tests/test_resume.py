"""Runs that survive: a training killed (SIGKILL, SIGTERM) or stopped after k epochs and then
resumed ends with the weights and metrics of the run that was never stopped, bit for bit.

The kill tests run `mtl compile --train` in a subprocess and kill it at a random step (the
step is printed, so a failure can be replayed); the in-process tests stop after one epoch
(`epochs=1`) and resume with the full epochs, for weightings with state of their own and
for MAML. Every weighting method's state round-trips through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import ROOT
from mtl_dsl.api import check_file
from mtl_dsl.language import registry as reg
from mtl_dsl.language.overrides import with_weighting
from mtl_dsl.training.groups import ParamGroups
from mtl_dsl.training.loop import train
from mtl_dsl.training.weighting.methods import build
from mtl_dsl.training.resume import RESUME, ResumeError
from mtl_dsl.training.runs import read_status
from mtl_dsl.training.callbacks import Callback
from mtl_dsl.training.signals import Interrupted
from test_train import small

MMOE = (ROOT / "specs" / "mmoe.mtl").read_text()
TRAIN = "train epochs=3 batch=32 lr=1e-3 seed=7 monitor=a.mse patience=3 checkpoint_every=11"


def mmoe_spec(folder, rows: int = 2000) -> str:
    """specs/mmoe.mtl with fewer rows, more steps, and a resumable state every 11 steps."""
    text = MMOE.replace("rows=20000", f"rows={rows}")
    text = "\n".join(TRAIN if line.startswith("train ") else line for line in text.splitlines())
    path = folder / "mmoe.mtl"
    path.write_text(text + "\n")
    return str(path)


def mtl(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mtl_dsl", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(run_dir, kinds=("epoch", "step")) -> list[dict]:
    """metrics.jsonl's records of `kinds`, without their wall-clock times."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["type"] in kinds:
            out.append({k: v for k, v in r.items() if k != "elapsed"})
    return out


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["state_dict"]


def assert_same_run(resumed, reference) -> None:
    a, b = weights(resumed), weights(reference)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert records(resumed) == records(reference)
    steps = [r["step"] for r in records(resumed, ("epoch",))]
    assert steps == sorted(set(steps))  # no epoch logged twice


def kill_at_random_step(spec: str, out, signum: int) -> tuple[subprocess.Popen, object, int]:
    """Start training, wait for a random number of step records, send `signum`."""
    proc = mtl("compile", spec, "--train", "--quiet", "--out", str(out))
    target = random.Random(os.urandom(8)).randint(2, 18)
    print(f"sending signal {signum} after {target} step records")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = list(out.glob("*/metrics.jsonl"))
        if runs and runs[0].read_text().count('"type": "step"') >= target:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signum)
    proc.wait(timeout=120)
    return proc, runs[0].parent, target


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    spec = mmoe_spec(tmp_path)
    proc, run_dir, _ = kill_at_random_step(spec, tmp_path / "killed", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert read_status(run_dir)["status"] == "killed"  # "running", but its pid is gone
    assert (run_dir / RESUME).exists()
    # killed mid-write, a save leaves its temporary file (here maybe, below for sure); the
    # resume.pt beside it is still the last complete state, and resuming clears it away
    (run_dir / f".{RESUME}.killedmidwrite.tmp").write_bytes(b"half a state")
    listed = subprocess.run([sys.executable, "-m", "mtl_dsl", "runs", str(tmp_path / "killed"),
                             "--json"], cwd=ROOT, capture_output=True, text=True)
    assert json.loads(listed.stdout)[0]["status"] == "killed"
    spec = check_file(spec).raise_for_errors().spec
    train(spec, resume=run_dir, progress=False)
    assert read_status(run_dir)["status"] == "finished"
    assert not list(run_dir.glob(".*.tmp"))
    reference = train(spec, out_dir=tmp_path / "ref", progress=False)
    assert_same_run(run_dir, reference.run_dir)


def test_sigterm_saves_exits_143_and_resumes_bit_identical(tmp_path):
    spec = mmoe_spec(tmp_path)
    proc, run_dir, _ = kill_at_random_step(spec, tmp_path / "term", signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 143, err
    assert f"resume with: mtl compile {spec} --train --resume {run_dir}" in err
    status = read_status(run_dir)
    assert status["status"] == "interrupted" and "SIGTERM" in status["error"]
    assert not (run_dir / "losses.png").exists()  # an interrupted run never looks finished
    spec = check_file(spec).raise_for_errors().spec
    train(spec, resume=run_dir, progress=False)
    reference = train(spec, out_dir=tmp_path / "ref", progress=False)
    assert_same_run(run_dir, reference.run_dir)


STREAM_MODEL = """model m
data parquet(train="train", val="val.parquet", stream=true, buffer=300)
feature city = sparse(dim=4)
feature age = dense(norm=standard)
label click, buy
input x = concat(city, age)
experts bottom = mlp(x, 8)
tower t1 = mlp(bottom, 4)
tower t2 = mlp(bottom, 4)
task ctr: binary(label=click) from t1
task cvr: binary(label=buy) from t2
train epochs=3 batch=32 seed=2 checkpoint_every=13
"""


def test_streamed_parquet_run_killed_and_resumed_is_bit_identical(tmp_path):
    n, rng = 4000, np.random.default_rng(1)
    click = (rng.random(n) < 0.3).astype(np.int64)
    table = pa.table({"city": rng.choice(["a", "b", "c", "d"], n),
                      "age": rng.normal(40, 10, n), "click": click,
                      "buy": click & (rng.random(n) < 0.5)})
    (tmp_path / "train").mkdir()
    for i in range(4):
        pq.write_table(table.slice(i * n // 4, n // 4), tmp_path / "train" / f"p{i}.parquet")
    pq.write_table(table.slice(0, 300), tmp_path / "val.parquet")
    spec = tmp_path / "stream.mtl"
    spec.write_text(STREAM_MODEL)
    proc, run_dir, _ = kill_at_random_step(str(spec), tmp_path / "killed", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    spec = check_file(spec).raise_for_errors().spec
    train(spec, resume=run_dir, progress=False)
    reference = train(spec, out_dir=tmp_path / "ref", progress=False)
    assert_same_run(run_dir, reference.run_dir)


# --------------------------------------------------------------------------
# In process: stop after one epoch, resume with the full epochs
# --------------------------------------------------------------------------

CASES = {"uncertainty": (ROOT / "specs" / "mmoe.mtl", None),
         "gradnorm": (ROOT / "specs" / "mmoe.mtl", "gradnorm"),
         "fixed": (ROOT / "specs" / "mmoe.mtl", "fixed"),
         "upgrad": (ROOT / "specs" / "mmoe.mtl", "upgrad"),
         # aggregators with state of their own (docs/weighting.md): GradVac also draws from
         # the random generator, ExcessMTL's warm-up spans the stop
         "gradvac": (ROOT / "specs" / "mmoe.mtl", "gradvac"),
         "excess_mtl": (ROOT / "specs" / "mmoe.mtl", "excess_mtl(warmup=10)"),
         "nashmtl": (ROOT / "specs" / "mmoe.mtl", "nashmtl(every=3)"),
         "maml": (ROOT / "specs" / "metaheac.mtl", None),
         # the embedding optimizers' state (docs/language.md, "Embedding tables")
         "lazy_adam": (ROOT / "specs" / "esmm.mtl", None),
         "rowwise_adagrad": (ROOT / "specs" / "esmm.mtl", "rowwise_adagrad"),
         "adagrad": (ROOT / "specs" / "esmm.mtl", "adagrad"),
         "embedding_dense": (ROOT / "specs" / "esmm.mtl", "dense")}
EMBEDDING = ("rowwise_adagrad", "adagrad", "dense")  # `method`: an embedding optimizer


@pytest.mark.parametrize("case", list(CASES))
def test_stopped_after_one_epoch_and_resumed_equals_the_whole_run(case, tmp_path):
    path, method = CASES[case]
    spec = small(path, rows=500, batch=64)
    if method in EMBEDDING:
        spec = small(path, rows=500, batch=64, embedding_optimizer=method, embedding_lr=0.05)
    elif method is not None:
        spec = with_weighting(spec, method)
    whole = train(spec, epochs=3, out_dir=tmp_path / "a", progress=False)
    first = train(spec, epochs=1, out_dir=tmp_path / "b", progress=False)
    assert read_status(first.run_dir)["status"] == "finished"
    resumed = train(spec, epochs=3, resume=first.run_dir, progress=False)
    assert resumed.run_dir == first.run_dir and resumed.best_epoch == whole.best_epoch
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert_same_run(resumed.run_dir, whole.run_dir)


class TermAtStep(Callback):
    """Send this process SIGTERM after step `step`: the loop saves and raises Interrupted."""

    def __init__(self, step: int):
        self.step = step

    def on_batch(self, run) -> None:
        if run.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_cosine_warmup_clipped_run_stopped_mid_epoch_resumes_bit_identical(tmp_path):
    """The schedule's rate depends on the step and the run's length, the plateau's counters
    are in resume.pt: stopped mid-epoch (step 10 of 7 a epoch) and resumed, the run ends as
    the one never stopped, with the same rate logged at every step."""
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=500, batch=64, schedule="cosine",
                 warmup=4, min_lr=1e-5, clip=0.05, lr=5e-3)
    whole = train(spec, epochs=3, out_dir=tmp_path / "a", progress=False)
    with pytest.raises(Interrupted):
        train(spec, epochs=3, out_dir=tmp_path / "b", progress=False, callbacks=[TermAtStep(10)])
    run_dir = next((tmp_path / "b").iterdir())
    assert torch.load(run_dir / RESUME, weights_only=True)["step"] == 10
    resumed = train(spec, resume=run_dir, progress=False)
    assert resumed.best_epoch == whole.best_epoch
    assert_same_run(resumed.run_dir, whole.run_dir)
    lr = [r["lr"] for r in records(whole.run_dir, ("step",))]
    assert lr[0] < lr[2] and lr[-1] == pytest.approx(1e-5) and len(set(lr)) > 5


def test_row_optimizer_clipped_run_stopped_mid_epoch_resumes_bit_identical(tmp_path):
    """ESMM's tables under row-wise Adagrad with clip=: the row sums are in resume.pt (the
    engine's state), and the run stopped at step 5 of an epoch ends as the one never
    stopped."""
    text = (ROOT / "specs" / "esmm.mtl").read_text().replace(
        "feature user = sparse(dim=16)", "feature user = sparse(hash=5000, dim=16)")
    path = tmp_path / "esmm.mtl"
    path.write_text(text)
    spec = small(path, rows=600, batch=64, clip=0.05, embedding_optimizer="rowwise_adagrad",
                 embedding_lr=0.05, patience=None)
    whole = train(spec, epochs=2, out_dir=tmp_path / "a", progress=False)
    with pytest.raises(Interrupted):
        train(spec, epochs=2, out_dir=tmp_path / "b", progress=False, callbacks=[TermAtStep(5)])
    run_dir = next((tmp_path / "b").iterdir())
    state = torch.load(run_dir / RESUME, weights_only=True)
    assert state["embedding"]["kind"] == "rowwise_adagrad" and state["embedding"]["steps"] == 5
    d16 = state["embedding"]["blocks"]["d16"]  # the rows 5 steps updated, not the table
    assert 0 < len(d16["rows"]) == len(d16["table"]) < 5001 / 2  # hashed users: 5,001 rows
    assert d16["slots"]["row_sum"].min() > 0 and "embeddings.tables.d16.weight" not in \
        state["model"]
    resumed = train(spec, resume=run_dir, progress=False)
    assert_same_run(resumed.run_dir, whole.run_dir)


def test_a_state_from_before_embedding_optimizers_was_dense(tmp_path):
    """resume.pt written before embedding_optimizer= existed trained its tables densely:
    resumed under today's default it is refused, naming the setting; with
    embedding_optimizer=dense it goes on."""
    dense = small(ROOT / "specs" / "esmm.mtl", rows=400, batch=64,
                  embedding_optimizer="dense")
    first = train(dense, epochs=1, out_dir=tmp_path, progress=False)
    state = torch.load(first.run_dir / RESUME, weights_only=True)
    for key in ("embedding_optimizer", "embedding_lr"):
        del state["fingerprint"]["train"][key]
    torch.save(state, first.run_dir / RESUME)
    default = small(ROOT / "specs" / "esmm.mtl", rows=400, batch=64)
    with pytest.raises(ResumeError, match="embedding_optimizer=dense in the run, lazy_adam"):
        train(default, epochs=2, resume=first.run_dir, progress=False)
    train(dense, epochs=2, resume=first.run_dir, progress=False)


def test_plateau_decays_on_the_validation_losses_and_its_count_survives_a_resume(tmp_path):
    """lr=0.05 on 400 rows: epoch 5's validation loss is worse than epoch 4's, so with
    lr_patience=1 the rate halves for epoch 6; stopped after epoch 5 and resumed, the run
    must know that decay (it is in resume.pt, not in the step count)."""
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=400, batch=64, lr=0.05, schedule="plateau",
                 lr_patience=1, factor=0.5, monitor=None, patience=None)
    whole = train(spec, epochs=6, out_dir=tmp_path / "a", progress=False)
    epochs = records(whole.run_dir, ("epoch",))
    losses = [sum(v["loss"] for v in r["val"].values()) for r in epochs]
    rate, best, bad, expected = 0.05, losses[0], 0, {}
    for epoch in range(1, 7):  # the rule of schedules.py, from the logged validation losses
        expected[epoch] = rate
        improved = losses[epoch] < best
        best, bad = (losses[epoch], 0) if improved else (best, bad + 1)
        if bad >= 1:
            rate, bad = rate * 0.5, 0
    logged = {r["epoch"]: r["lr"] for r in records(whole.run_dir, ("step",))}
    assert logged == pytest.approx(expected) and logged[6] < logged[1]  # a decay happened
    first = train(spec, epochs=5, out_dir=tmp_path / "b", progress=False)
    resumed = train(spec, epochs=6, resume=first.run_dir, progress=False)
    assert_same_run(resumed.run_dir, whole.run_dir)


def test_a_state_from_before_schedules_resumes_and_refuses_a_schedule_now(tmp_path):
    """resume.pt written before schedule=/clip= existed: its fingerprint lacks them (they
    had their defaults) and it holds no schedule state."""
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=400, batch=64)
    whole = train(spec, epochs=2, out_dir=tmp_path / "a", progress=False)
    first = train(spec, epochs=1, out_dir=tmp_path / "b", progress=False)
    state = torch.load(first.run_dir / RESUME, weights_only=True)
    new = ("schedule", "warmup", "warmup_epochs", "min_lr", "step_size", "gamma", "factor",
           "lr_patience", "clip", "embedding_l2")
    for key in new:
        del state["fingerprint"]["train"][key]
    del state["schedule"]
    torch.save(state, first.run_dir / RESUME)
    cosine = small(ROOT / "specs" / "mmoe.mtl", rows=400, batch=64, schedule="cosine")
    with pytest.raises(ResumeError, match="train schedule=constant in the run, cosine now"):
        train(cosine, epochs=2, resume=first.run_dir, progress=False)
    train(spec, epochs=2, resume=first.run_dir, progress=False)
    assert_same_run(first.run_dir, whole.run_dir)


def test_resume_refuses_another_structure_or_other_data(tmp_path):
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=400, batch=64)
    run = train(spec, epochs=1, out_dir=tmp_path, progress=False)
    text = spec.source.replace("experts e[8] = mlp(x, 16)", "experts e[8] = mlp(x, 32)")
    (tmp_path / "wide.mtl").write_text(text.replace("rows=20000", "rows=400"))
    wider = small(tmp_path / "wide.mtl", rows=400, batch=64)
    with pytest.raises(ResumeError, match="structure differs"):
        train(wider, epochs=2, resume=run.run_dir, progress=False)
    with pytest.raises(ResumeError, match="training rows"):
        train(small(ROOT / "specs" / "mmoe.mtl", rows=500, batch=64), epochs=2,
              resume=run.run_dir, progress=False)
    with pytest.raises(ResumeError, match="train lr="):
        train(small(ROOT / "specs" / "mmoe.mtl", rows=400, batch=64, lr=0.5), epochs=2,
              resume=run.run_dir, progress=False)
    with pytest.raises(ResumeError, match="no resume.pt"):
        (tmp_path / "empty").mkdir()
        train(spec, resume=tmp_path / "empty", progress=False)


def test_a_state_of_the_old_format_is_refused_with_a_hint(tmp_path):
    """resume.pt as mtl-dsl wrote it before each method named its own state (format 1: the
    fields found by walking the objects, tagged by type): a clear E705, exit 1 from the CLI."""
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    spec = mmoe_spec(tmp_path, rows=300)
    run = train(check_file(spec).raise_for_errors().spec, epochs=1, out_dir=tmp_path,
                progress=False)
    state = torch.load(run.run_dir / RESUME, weights_only=True)
    state["format"] = "mtl-dsl-resume/1"
    state["weighting"]["state"] = {"_last": {"tensor": torch.ones(2)}, "_sum": {"value": None},
                                   "_n": {"value": 0}, "log_var": {"tensor": torch.zeros(2)}}
    torch.save(state, run.run_dir / RESUME)
    with pytest.raises(ResumeError, match="earlier mtl-dsl .format mtl-dsl-resume/1"):
        train(check_file(spec).raise_for_errors().spec, resume=run.run_dir, progress=False)
    result = CliRunner().invoke(app, ["compile", spec, "--train", "--quiet", "--resume",
                                      str(run.run_dir)])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 1 and "error[E705]" in err and "Traceback" not in err
    assert "start a new run" in err and "mtl-dsl-resume/2" in err


def test_cli_refuses_a_resume_with_another_weighting(tmp_path):
    from typer.testing import CliRunner

    from mtl_dsl.tools.cli.main import app

    spec = mmoe_spec(tmp_path, rows=300)
    run = train(check_file(spec).raise_for_errors().spec, epochs=1, out_dir=tmp_path,
                progress=False)
    result = CliRunner().invoke(app, ["compile", spec, "--train", "--quiet", "--resume",
                                      str(run.run_dir), "--weighting", "pcgrad"])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 1 and "error[E705]" in err and "Traceback" not in err
    assert "weighting uncertainty" in err
    listed = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert listed.exit_code == 0 and run.run_dir.name[:12] in listed.stdout
    assert "finished" in listed.stdout


# --------------------------------------------------------------------------
# Every weighting's state round-trips
# --------------------------------------------------------------------------

K = 4


class Toy(torch.nn.Module):
    """Four tasks (Krum and the trimmed mean need a few) on one shared layer."""

    def __init__(self):
        super().__init__()
        self.shared = torch.nn.Linear(4, 6)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(6, 1) for _ in range(K)])

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.shared(x))
        return {f"t{i}": (head(h).squeeze(1) - x[:, i]).pow(2).mean() + 0.1 * (i + 1)
                for i, head in enumerate(self.heads)}


# The stateful gradient methods again with the parameters that reach the rest of their state
# (ExcessMTL's warm-up, Nash-MTL's steps between solves, CR-MOGM over a stateful method).
VARIANTS = {"excess_mtl(warmup=5)": ("excess_mtl", {"warmup": 5}),
            "nashmtl(every=2)": ("nashmtl", {"every": 2}),
            **{f"crmogm(of={of})": ("crmogm", {"of": of})
               for of in ("gradvac", "nashmtl", "pcd", "excess_mtl")}}


def _setup(name: str):
    kind, params = VARIANTS.get(name, (name, {}))
    torch.manual_seed(0)
    model = Toy()
    scheme = build(kind, reg.WEIGHTINGS[kind](**params), [f"t{i}" for i in range(K)])
    shared = tuple(model.shared.parameters())
    scheme.attach(ParamGroups(shared=shared, shared_with_embeddings=shared, last_shared=shared))
    opt = torch.optim.SGD([*model.parameters(), *scheme.parameters()], lr=0.05)
    return model, scheme, opt


def _steps(model, scheme, opt, xs) -> list[list[float]]:
    seen = []
    for x in xs:
        opt.zero_grad()
        scheme.step(model.losses(x)).backward()
        opt.step()
        scheme.after_step(lambda: model.losses(x))
        scheme.end_epoch({k: v.item() for k, v in model.losses(x).items()})
        seen.append(list(scheme.weights().values()))
    return seen


@pytest.mark.parametrize("kind", [*reg.WEIGHTINGS, *VARIANTS])
def test_every_weighting_state_round_trips(kind):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(16, 4, generator=g) for _ in range(6)]
    model, scheme, opt = _setup(kind)
    _steps(model, scheme, opt, xs[:3])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "scheme": scheme.state_dict(), "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    expected = _steps(model, scheme, opt, xs[3:])
    model2, scheme2, opt2 = _setup(kind)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    scheme2.load_state_dict(saved["scheme"])
    torch.set_rng_state(saved["rng"])
    assert _steps(model2, scheme2, opt2, xs[3:]) == expected
    a, b = model.state_dict(), model2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp makes 0600 files; a run folder's files must be as readable as any other."""
    from mtl_dsl.training.runs import atomic_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == plain.stat().st_mode
