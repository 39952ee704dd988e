"""Expert diagnostics: the statistics, the collapse and near-identical warnings, the epoch
records' `experts` entry and experts.png."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mtl_dsl.api import check_text, train
from mtl_dsl.data.tensors import to_tensors
from mtl_dsl.language import registry as reg
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.training.experts import ExpertWatch, gate_stats, max_cosine
from mtl_dsl.training.plots import draw_experts

MMOE = """model m
data synthetic.correlated(rows=300, dim=6, seed=2)
feature x = dense(6)
label y1, y2
experts e[4] = mlp(x, 5)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 3)
tower t_b = mlp(g_b, 3)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
train epochs=2 batch=64 seed=3
"""


def model_and_rows(text: str = MMOE, rows: int = 64):
    checked = check_text(text).raise_for_errors()
    torch.manual_seed(0)
    model = compile_model(checked.spec, checked.graph)
    x = np.random.default_rng(0).standard_normal((rows, 6)).astype(np.float32)
    return model, to_tensors({"x": x})


def test_gate_stats_by_hand():
    w = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.97, 0.01, 0.01, 0.01],
                      [0.25, 0.25, 0.25, 0.25], [0.97, 0.01, 0.01, 0.01]])
    s = gate_stats(w, ["e[0]", "e[1]", "e[2]", "e[3]"])
    mean = w.mean(0)
    assert s["mean"] == pytest.approx(mean.tolist(), abs=1e-6)
    row_h = [-(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01))] * 3 + [math.log(4)]
    assert s["entropy"] == pytest.approx(sum(row_h) / 4, rel=1e-5)
    assert s["entropy_of_mean"] == pytest.approx(float(-(mean * mean.log()).sum()), rel=1e-5)
    assert s["top"] == "e[0]" and s["top_rows"] == pytest.approx(0.75)
    # mean weight of e[1..3] is 0.07 > 0.1/4: none is negligible
    assert s["negligible"] == 0.0
    s2 = gate_stats(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), ["a", "b", "c", "d"])
    assert s2["negligible"] == pytest.approx(0.75) and s2["entropy"] == 0.0


def test_max_cosine_finds_the_identical_pair():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(50, 3, 4, generator=g)
    assert max_cosine(e)[0] < 0.9
    e[:, 2] = 3 * e[:, 0] + 1  # the same function up to scale and shift
    cos, pair = max_cosine(e)
    assert cos == pytest.approx(1.0, abs=1e-5) and set(pair) == {0, 2}


def test_a_collapsed_gate_and_identical_experts_warn_once(capsys):
    model, rows = model_and_rows()
    with torch.no_grad():
        model.gates["g_a"].proj.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
        group = model.experts["e"]
        h = group.first.weight.shape[0] // 4
        group.first.weight[h:2 * h] = group.first.weight[:h]  # expert 1 := expert 0
        group.first.bias[h:2 * h] = group.first.bias[:h]
    watch = ExpertWatch(model, rows)
    record = watch.record(model)["experts"]
    assert record["gates"]["g_a"]["top"] == "e[0]"
    assert record["gates"]["g_a"]["top_rows"] > reg.COLLAPSE_ROWS
    assert record["gates"]["g_b"]["top_rows"] < reg.COLLAPSE_ROWS
    assert record["groups"]["e"]["max_cosine"] > reg.IDENTICAL_COSINE
    texts = record["warnings"]
    assert any("gate 'g_a' collapsed" in t for t in texts)
    assert any("experts e[0] and e[1] are near-identical" in t for t in texts)
    assert not any("g_b" in t for t in texts)
    watch.record(model)  # the same warnings again: in the record, not on stderr
    err = capsys.readouterr().err
    assert err.count("collapsed") == 1 and err.count("near-identical") == 1


def test_a_healthy_model_has_no_warnings_and_the_mode_is_kept():
    model, rows = model_and_rows()
    model.train()
    record = ExpertWatch(model, rows).record(model)["experts"]
    assert record["warnings"] == [] and model.training
    assert sum(record["gates"]["g_b"]["mean"]) == pytest.approx(1.0, abs=1e-5)


def test_the_sample_is_bounded(monkeypatch):
    monkeypatch.setattr(reg, "EXPERT_SAMPLE_ROWS", 10)
    model, rows = model_and_rows(rows=40)
    assert len(ExpertWatch(model, rows).sample) == 10


def test_a_model_without_gates_gets_no_entry():
    text = MMOE.replace("experts e[4] = mlp(x, 5)", "experts e = mlp(x, 5)") \
        .replace("gate g_a = softmax(x) over e\ngate g_b = softmax(x) over e\n", "") \
        .replace("mlp(g_a, 3)", "mlp(e, 3)").replace("mlp(g_b, 3)", "mlp(e, 3)")
    model, rows = model_and_rows(text)
    assert ExpertWatch(model, rows).record(model) == {}


def test_training_logs_experts_per_epoch_and_draws_experts_png(tmp_path):
    result = train(check_text(MMOE).raise_for_errors().spec, out_dir=tmp_path, progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    for r in epochs:
        assert set(r["experts"]["gates"]) == {"g_a", "g_b"}
        assert len(r["experts"]["gates"]["g_a"]["mean"]) == 4
        assert "e" in r["experts"]["groups"]
    png = result.run_dir / "experts.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_heat_map_leaves_unread_experts_blank(tmp_path):
    record = {"epoch": 3, "experts": {"warnings": [], "gates": {
        "p.a": {"experts": ["p.e_a", "p.e_s"], "mean": [0.7, 0.3]},
        "p.b": {"experts": ["p.e_b", "p.e_s"], "mean": [0.4, 0.6]}}}}
    draw_experts(record, tmp_path / "experts.png")
    assert (tmp_path / "experts.png").stat().st_size > 1000
