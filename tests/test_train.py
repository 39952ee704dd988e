"""End to end: every shipped spec trains, the run folder is complete, checkpoints predict again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, SPECS
from mtl_dsl.data.frames import load as load_data
from mtl_dsl.training import loop as train_mod
from mtl_dsl.training.metrics import evaluate, outputs
from mtl_dsl.api import load
from mtl_dsl.language.overrides import with_weighting
from mtl_dsl.training.checkpoints import load_checkpoint
from mtl_dsl.training.loop import train
from mtl_dsl.training.stopping import EarlyStopping

ROWS = 2000


def small(path, rows: int = ROWS, **train_params):
    """A spec with fewer synthetic rows (file sources are left as they are)."""
    spec = load(path)
    if spec.data is not None and "rows" in type(spec.data.params).model_fields:
        params = spec.data.params.model_copy(update={"rows": rows})
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"params": params})})
    if train_params:
        params = spec.train.params.model_copy(update=train_params)
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"params": params})})
    return spec


def val_loss(record: dict) -> float:
    return sum(v["loss"] for v in record["val"].values())


@pytest.fixture(scope="module")
def mmoe_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return train(small(ROOT / "specs" / "mmoe.mtl"), epochs=2, out_dir=out, progress=False), out


# the census specs read 100k real rows; tests/test_data_readers.py trains one on a sample
TRAINED = [p for p in SPECS if not p.stem.startswith("census_")]


@pytest.mark.parametrize("path", TRAINED, ids=[p.stem for p in TRAINED])
def test_training_lowers_the_validation_loss(path, tmp_path):
    result = train(small(path, rows=8000, batch=32), epochs=2, out_dir=tmp_path, progress=False)
    before, after = val_loss(result.history[0]), val_loss(result.history[result.best_epoch])
    assert result.best_epoch >= 1
    assert after < 0.95 * before, (before, after)
    assert len(result.history) == 3 and result.run_dir.parent == tmp_path


def test_run_folder_has_every_file(mmoe_run):
    result, _ = mmoe_run
    d = result.run_dir
    assert d.name.startswith("mmoe-")
    assert (d / "spec.mtl").read_text() == (ROOT / "specs" / "mmoe.mtl").read_text()
    assert (d / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (d / "checkpoint.pt").stat().st_size > 1000
    strict = {"parse_constant": lambda c: pytest.fail(f"non-JSON constant {c}")}
    lines = (d / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, **strict) for line in lines]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("epoch") == 3 and kinds.count("step") >= 10
    step = next(r for r in records if r["type"] == "step")
    assert set(step["train_loss"]) == set(step["weights"]) == {"a", "b"}
    assert step["elapsed"] > 0
    epoch = [r for r in records if r["type"] == "epoch"][-1]
    assert set(epoch["val"]["a"]) == {"loss", "mse", "mae"}
    weights = [r["weights"]["a"] for r in records if r["type"] == "step"]
    assert weights[0] != weights[-1]  # uncertainty weighting learns


def test_a_second_run_never_overwrites_the_first(mmoe_run, tmp_path):
    first = train(small(ROOT / "specs" / "omoe.mtl", rows=500), epochs=1, out_dir=tmp_path,
                  progress=False)
    before = {p.name: p.read_bytes() for p in first.run_dir.iterdir()}
    second = train(small(ROOT / "specs" / "omoe.mtl", rows=500), epochs=1, out_dir=tmp_path,
                   progress=False)
    assert second.run_dir != first.run_dir
    assert {p.name: p.read_bytes() for p in first.run_dir.iterdir()} == before
    assert (second.run_dir / "checkpoint.pt").exists()


def test_checkpoint_reproduces_the_validation_metrics(mmoe_run):
    result, _ = mmoe_run
    ck = load_checkpoint(result.checkpoint)
    assert ck.spec.data.params.rows == ROWS  # the data as trained, not as the text says
    frame = load_data(ck.spec)
    train_rows, val_rows = ck.split(frame)
    assert np.array_equal(val_rows, result.data.val.rows)
    val = ck.encode(frame).take(val_rows)
    expected = outputs(result.model, result.data.val)
    got = outputs(ck.model, val)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task])
    metrics = evaluate(ck.model, val, ck.spec.tasks)
    for task, values in result.best_metrics.items():
        for name, v in values.items():
            assert metrics[task][name] == pytest.approx(v, rel=1e-5), (task, name)
    assert ck.meta["best_epoch"] == result.best_epoch


def test_early_stopping_keeps_the_best_weights(monkeypatch, tmp_path):
    """Scripted validation scores: best at epoch 2, then two worse epochs with patience=2."""
    script = iter([5.0, 3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    states = []

    def scripted(model, data, tasks, batch=8192):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        mse = next(script)
        return {t.name: {"loss": mse, "mse": mse, "mae": mse} for t in tasks}

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=500, patience=2, epochs=10)
    result = train(spec, out_dir=tmp_path, progress=False)
    assert result.stopped_early and result.best_epoch == 2
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]
    assert result.best_metrics["a"]["mse"] == 2.0
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, states[2][k]), k
    assert any(not torch.equal(v, states[4][k]) for k, v in states[2].items())


def test_weighting_override(tmp_path):
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=1000)
    result = train(with_weighting(spec, "gradnorm"), epochs=1, out_dir=tmp_path, progress=False)
    start = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert start["weighting"] == "gradnorm"
    w = result.history[-1]["weights"]
    assert sum(w.values()) == pytest.approx(2.0, rel=1e-5) and w["a"] != 1.0


def test_overrides_are_recorded_and_reapplied_from_the_checkpoint(tmp_path):
    spec = with_weighting(small(ROOT / "specs" / "mmoe.mtl", rows=500), "dwa(t=3)")
    result = train(spec, epochs=1, out_dir=tmp_path, progress=False)
    start = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert start["overrides"] == [["weighting", "dwa(t=3)"]]
    written = (result.run_dir / "spec.mtl").read_text()  # the spec as trained
    assert "weighting dwa(t=3.0)" in written and "weighting uncertainty" not in written
    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["overrides"] == [["weighting", "dwa(t=3)"]]
    ck = load_checkpoint(result.checkpoint)
    assert ck.spec.weighting.kind == "dwa" and ck.spec.weighting.params.t == 3.0
    assert ck.spec.overrides == (("weighting", "dwa(t=3)"),)


def test_early_stopping_follows_the_monitor_direction_and_patience():
    stop = EarlyStopping("a.auc", patience=2, trained=["a"])
    assert not stop.update(1, {"a": {"auc": 0.6}})
    assert not stop.update(2, {"a": {"auc": 0.8}})  # higher AUC is better
    assert not stop.update(3, {"a": {"auc": 0.7}})
    assert stop.update(4, {"a": {"auc": 0.75}})  # two epochs without improvement
    assert stop.best_epoch == 2 and stop.best_score == 0.8
    assert set(stop.state_dict()) == {"best_score", "best_epoch", "bad", "task", "metric",
                                      "fallback"}  # no copy of the weights
    by_loss = EarlyStopping(None, patience=None, trained=["a", "b"])
    by_loss.update(1, {"a": {"loss": 1.0}, "b": {"loss": 2.0}})
    assert not by_loss.update(2, {"a": {"loss": 5.0}, "b": {"loss": 5.0}})  # no patience
    assert by_loss.best_score == 3.0 and by_loss.best_epoch == 1


def test_the_best_epochs_weights_come_back_from_checkpoint_pt(tmp_path):
    """lr=0.05 on 400 rows: a later epoch is worse than an earlier one, so the run ends
    with the best epoch's weights, read back from checkpoint.pt (no copy was kept in
    memory), not the last epoch's (those are in resume.pt)."""
    spec = small(ROOT / "specs" / "mmoe.mtl", rows=400, batch=64, lr=0.05, monitor=None,
                 patience=None)
    result = train(spec, epochs=6, out_dir=tmp_path, progress=False)
    assert 0 < result.best_epoch < 6
    best = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    last = torch.load(result.run_dir / "resume.pt", weights_only=True)["model"]
    now = result.model.state_dict()
    assert all(torch.equal(now[k], best[k]) for k in best)
    assert not all(torch.equal(now[k], last[k]) for k in last)


def test_the_start_of_a_run_reports_its_hash_collisions_and_tables(tmp_path):
    """A hashed table's collisions on the training rows in the start record and on the
    console (before training), with the embedding engine's settings."""
    import io

    from mtl_dsl.training.console import RunConsole

    text = (ROOT / "specs" / "esmm.mtl").read_text().replace(
        "feature user = sparse(dim=16)", "feature user = sparse(hash=50, dim=16)")
    (tmp_path / "h.mtl").write_text(text)
    spec = small(tmp_path / "h.mtl", rows=400, batch=64)
    out = io.StringIO()
    result = train(spec, epochs=1, out_dir=tmp_path, progress=False,
                   callbacks=[RunConsole(stream=out)])
    start = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    c = start["hashing"]["user"]
    assert list(start["hashing"]) == ["user"] and c["buckets"] == 50 and c["values"] > 50
    assert c["colliding"] > 0 and 0 < c["rate"] <= 1  # more values than buckets
    assert start["tables"] == {"embedding_optimizer": "lazy_adam", "embedding_lr": 2e-3,
                               "dense_gradients": None, "tables": "replicated",
                               "rows": "touched"}
    printed = out.getvalue().splitlines()
    line = next(x for x in printed if x.startswith("hash user: "))
    assert f"{c['values']:,} values of the training rows in 50 buckets" in line
    assert printed.index(line) < next(i for i, x in enumerate(printed)
                                      if x.startswith("epoch 1/"))
