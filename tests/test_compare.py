"""`mtl compare`: methods side by side, single-task baselines, Δm%, seesaw, negative transfer."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from conftest import ROOT
from mtl_dsl.training import plots
from mtl_dsl.tools.experiments.compare import (BASELINE, Comparison, Row, Run, compare, folder_name,
                                   primary_metric, single_task, split_methods, task_gain)
from mtl_dsl.tools.experiments.significance import interval, t975
from mtl_dsl.language.overrides import weighting_setting as method_setting, written
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.api import check_text, load
from test_cli import assert_no_traceback, mtl

MMOE = ROOT / "specs" / "mmoe.mtl"

TWO_KINDS = """model two
data synthetic.correlated(rows=100, dim=8, target=binary)
feature x = dense(8)
label y1, y2
experts e = mlp(x, 8)
tower t_a = mlp(e, 4)
tower t_b = mlp(e, 4)
task a: binary(label=y1, metrics=[auc]) from t_a
task b: regression(label=y2, metrics=[mse]) from t_b
"""


def test_methods_split_on_commas_outside_parentheses():
    assert split_methods(["fixed,cagrad(c=0.4, norm=1),pcgrad", "dwa(t=2)", "pcgrad"]) == \
        ["fixed", "cagrad(c=0.4, norm=1)", "pcgrad", "dwa(t=2)"]


def test_method_words_are_validated_like_the_spec_line():
    assert method_setting("cagrad(c=0.4)").params.c == 0.4
    with pytest.raises(MtlError, match="E209"):
        method_setting("pcgard")
    with pytest.raises(MtlError, match="E302"):
        method_setting("dwa(temperature=2)")
    assert written(method_setting("gradnorm(alpha=1)")) == "gradnorm(alpha=1.0)"
    assert written(method_setting("mgda(embeddings=true)")) == "mgda(embeddings=true)"


def test_single_task_spec_zeroes_the_other_tasks_and_watches_its_own():
    spec = load(MMOE)  # monitor=a.mse, weighting uncertainty
    alone_a, alone_b = single_task(spec, "a"), single_task(spec, "b")
    assert [t.params.weight for t in alone_b.tasks] == [0.0, 1.0]
    assert [t.name for t in alone_b.tasks] == ["a", "b"]  # same tasks: same split, same init
    assert alone_b.weighting.kind == "fixed" and alone_b.train.params.monitor == "b.mse"
    assert alone_a.train.params.monitor == "a.mse" and alone_a.train.params.patience == 3
    assert "single-task baseline of 'b'" in alone_b.source


def test_task_gain_signs_by_metric_direction():
    assert task_gain({"auc": 0.88}, {"auc": 0.8}, ["auc"]) == pytest.approx(10.0)
    assert task_gain({"mse": 1.2}, {"mse": 1.0}, ["mse"]) == pytest.approx(-20.0)
    assert task_gain({"auc": 0.88, "logloss": 0.5}, {"auc": 0.8, "logloss": 0.4},
                     ["auc", "logloss"]) == pytest.approx((10.0 - 25.0) / 2)


def fabricated() -> Comparison:
    spec = check_text(TWO_KINDS).spec
    runs = []
    for seed, (auc0, mse0) in enumerate([(0.80, 1.0), (0.70, 2.0)]):
        base = {"a": {"auc": auc0, "loss": 0.5}, "b": {"mse": mse0, "loss": mse0}}
        for t in ("a", "b"):
            runs.append(Run("two", f"{BASELINE}:{t}", seed, base, "val", "", 0.0))
        runs.append(Run("two", "fixed", seed, {"a": {"auc": auc0 * 1.1}, "b": {"mse": mse0 * 1.2}},
                        "val", "", 0.0))
        runs.append(Run("two", "pcgrad", seed, {"a": {"auc": auc0 * 1.1},
                                                "b": {"mse": mse0 * 0.9}}, "val", "", 0.0))
    return Comparison({"two": spec}, ["fixed", "pcgrad"], {"two": [0, 1]}, runs, ROOT)


def test_delta_m_seesaw_and_negative_transfer():
    rows = {r.method: r for r in fabricated().rows()}
    fixed, pcgrad = rows["fixed"], rows["pcgrad"]
    assert fixed.delta == pytest.approx([-5.0, -5.0])  # (+10 - 20) / 2 on both seeds
    assert fixed.negative() == ["b"] and fixed.seesaw()
    assert pcgrad.delta == pytest.approx([10.0, 10.0])
    assert pcgrad.negative() == [] and not pcgrad.seesaw()
    assert rows[BASELINE].tasks["a"]["auc"] == [0.80, 0.70]


def test_table_and_csv():
    c = fabricated()
    md = c.markdown()
    assert "| method | a auc | b mse | Δ a auc % | Δ b mse % | Δm% | flags |" in md
    assert "| `fixed` | 0.8250 ± 0.0778 | 1.8000 ± 0.8485 | 10.00 ± 0.00 | -20.00 ± 0.00 | " \
           "-5.00 ± 0.00 | negative transfer: b; better: a; seesaw |" in md
    assert "t-interval of its paired per-seed Δ" in md
    rows = list(csv.DictReader(io.StringIO(c.csv())))
    fixed_b = next(r for r in rows if r["method"] == "fixed" and r["task"] == "b")
    assert float(fixed_b["delta_task"]) == pytest.approx(-20.0)
    assert fixed_b["negative_transfer"] == "True" and fixed_b["seesaw"] == "True"
    assert fixed_b["primary"] == "mse" and fixed_b["better"] == "False"
    assert float(fixed_b["delta_task_low"]) == float(fixed_b["delta_task_high"]) == -20.0
    assert float(fixed_b["mean"]) == pytest.approx(1.8)


def test_compare_runs_same_split_and_init_across_methods(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot", lambda *a, **k: None)
    result = compare([MMOE, ROOT / "specs" / "shared_bottom.mtl"], ["fixed", "dwa"], seeds=2,
                     epochs=1, rows=200, out_dir=tmp_path, log=lambda _: None)
    assert result.seeds == {"mmoe": [7, 8], "shared_bottom": [7, 8]}
    assert len(result.runs) == 2 * 2 * (2 + 2)  # specs x seeds x (methods + baselines)
    first = {}
    for r in (r for r in result.runs if r.spec == "mmoe"):
        records = [json.loads(line) for line in open(f"{r.run_dir}/metrics.jsonl")]
        start, epoch0 = records[0], records[1]
        assert start["seed"] == r.seed
        first[(r.method, r.seed)] = epoch0["val"]["a"]["mse"]  # the untrained model
    for seed in (7, 8):  # same initial weights and validation rows for every method
        assert first[("fixed", seed)] == first[("dwa", seed)] == \
            first[(f"{BASELINE}:a", seed)] == first[(f"{BASELINE}:b", seed)]
    assert first[("fixed", 7)] != first[("fixed", 8)]
    rows = {(r.spec, r.method): r for r in result.rows()}
    assert set(rows) == {(s, m) for s in ("mmoe", "shared_bottom")
                         for m in (BASELINE, "fixed", "dwa")}
    fixed = rows[("shared_bottom", "fixed")]
    assert len(fixed.delta) == 2 and all(math.isfinite(d) for d in fixed.delta)
    assert (result.out_dir / "results.md").read_text() == result.markdown()
    assert "### shared_bottom" in result.markdown()
    assert (result.out_dir / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert len((result.out_dir / "runs.jsonl").read_text().splitlines()) == 16
    folders = sorted(p.name for p in (result.out_dir / "runs").iterdir())
    assert "mmoe-fixed-seed7" in folders and "shared_bottom-single-task_b-seed8" in folders
    assert len(folders) == 16 and all(Path(r.run_dir).is_dir() for r in result.runs)


def test_cli_compare_prints_and_saves_the_table(tmp_path):
    out = mtl("compare", str(MMOE), "-m", "fixed,dwa(t=1.5)", "--rows", "200", "--epochs",
              "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert_no_traceback(out)
    assert "### mmoe" in out.stdout and "| single-task |" in out.stdout
    assert "| `dwa(t=1.5)` |" in out.stdout and "Δm%" in out.stdout
    assert "[4/4]" in out.stderr
    folder = next(tmp_path.glob("compare-mmoe-*"))
    for name in ("results.md", "results.csv", "compare.png", "runs.jsonl"):
        assert (folder / name).stat().st_size > 0


def test_unknown_method_stops_before_any_training(tmp_path):
    with pytest.raises(MtlError, match="did you mean 'pcgrad'"):
        compare([MMOE], ["fixed", "pcgard"], out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_compare_usage_error(tmp_path):
    csv_spec = tmp_path / "c.mtl"
    (tmp_path / "d.csv").write_text("x,y1,y2\n1,0,1\n2,1,0\n3,0,1\n4,1,1\n5,0,0\n")
    csv_spec.write_text('model c\ndata csv("d.csv")\nfeature x = dense()\nlabel y1, y2\n'
                        "experts e = mlp(x, 4)\ntower t_a = mlp(e, 2)\ntower t_b = mlp(e, 2)\n"
                        "task a: binary(label=y1) from t_a\ntask b: binary(label=y2) from t_b\n")
    usage = mtl("compare", str(csv_spec), "--rows", "100", "--out", str(tmp_path))
    assert usage.returncode == 2 and "--rows works with synthetic data" in usage.stderr
    assert_no_traceback(usage)


def test_t_quantile_against_known_values():
    # Student's t, 0.975 quantile (standard tables; scipy.stats.t.ppf agrees to 1e-6)
    known = {1: 12.7062, 2: 4.3027, 4: 2.7764, 9: 2.2622, 30: 2.0423, 31: 2.0395,
             40: 2.0211, 60: 2.0003, 120: 1.9799, 1000: 1.9623}
    for df, t in known.items():
        assert t975(df) == pytest.approx(t, abs=1e-4), df
    assert all(t975(d) > t975(d + 1) for d in range(1, 200))  # falls towards 1.96
    with pytest.raises(ValueError):
        t975(0)


def test_a_difference_inside_the_spread_is_not_flagged_a_consistent_one_is():
    noisy = Row("s", "m", {}, task_delta={"a": [3.0, -2.0, 4.0, -1.0]})  # mean 1, sd 2.9
    assert interval(noisy.task_delta["a"])[0] < 0 < interval(noisy.task_delta["a"])[1]
    assert noisy.negative() == noisy.better() == [] and noisy.tested()
    small = Row("s", "m", {}, task_delta={"a": [-0.5, -0.6, -0.4], "b": [0.2, 0.3, 0.25]})
    assert small.negative() == ["a"] and small.better() == ["b"] and small.seesaw()
    low, high = interval([-0.5, -0.6, -0.4])  # -0.5 ± 4.3027 * 0.1 / sqrt(3)
    assert (low, high) == pytest.approx((-0.5 - 0.248415, -0.5 + 0.248415), abs=1e-5)
    one = Row("s", "m", {}, task_delta={"a": [-30.0], "b": [40.0]})  # 1 seed: no test
    assert one.negative() == one.better() == [] and not one.seesaw() and not one.tested()


def test_one_seed_says_no_test_and_flags_nothing():
    c = fabricated()
    c.runs = [r for r in c.runs if r.seed == 0]
    c.seeds = {"two": [0]}
    md = c.markdown()
    assert "1 seed: no test" in md and "negative transfer" not in md and "seesaw" not in md


def test_task_delta_is_of_the_primary_metric_named_in_the_header():
    spec = check_text(TWO_KINDS).spec
    assert primary_metric(spec, "a") == "auc" and primary_metric(spec, "b") == "mse"
    watched = check_text(TWO_KINDS + "train monitor=a.auc\n").spec
    assert primary_metric(watched, "a") == "auc"
    base = {"a": {"auc": 0.8, "logloss": 0.4}, "b": {"mse": 1.0}}
    runs = [Run("two", f"{BASELINE}:{t}", 0, base, "val", "", 0.0) for t in ("a", "b")]
    runs.append(Run("two", "fixed", 0, {"a": {"auc": 0.88, "logloss": 0.5}, "b": {"mse": 1.0}},
                    "val", "", 0.0))
    c = Comparison({"two": spec}, ["fixed"], {"two": [0]}, runs, ROOT)
    row = next(r for r in c.rows() if r.method == "fixed")
    assert row.task_delta["a"] == pytest.approx([10.0])  # auc alone, not auc and logloss
    assert "Δ a auc %" in c.markdown()


def test_run_folders_are_named_by_spec_method_and_seed():
    assert folder_name("mmoe", "fixed", 7) == "mmoe-fixed-seed7"
    assert folder_name("m", "cagrad(c=0.4, norm_eps=1e-4)", 0) == \
        "m-cagrad_c=0.4_norm_eps=1e-4-seed0"
    assert folder_name("m", f"{BASELINE}:a", 1) == "m-single-task_a-seed1"


def test_plot_grows_with_its_content(tmp_path):
    from PIL import Image

    c = fabricated()
    c.plot(tmp_path / "two.png")
    many = fabricated()
    many.methods = [f"method_number_{i}" for i in range(12)]
    many.runs += [Run("two", m, seed, {"a": {"auc": 0.8}, "b": {"mse": 1.0}}, "val", "", 0.0)
                  for m in many.methods for seed in (0, 1)]
    many.plot(tmp_path / "many.png")
    small, large = Image.open(tmp_path / "two.png").size, Image.open(tmp_path / "many.png").size
    assert small[0] >= 640 and large[0] > small[0] and large[1] > small[1]
