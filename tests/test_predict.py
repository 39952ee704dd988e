"""`mtl predict` and `mtl eval`: a checkpoint applies the training run's encoders to new data
and reproduces the run's validation metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from conftest import ROOT
from mtl_dsl.data.frames import load as load_data
from mtl_dsl.training.metrics import metric
from mtl_dsl.api import check_file
from mtl_dsl.training.checkpoints import load_checkpoint
from mtl_dsl.training.loop import train

SPEC = """model shop
data csv("train.csv", split=[0.6, 0.2, 0.2], stratify=click)
feature city = sparse(dim=4, min_count=2)
feature shop = sparse(hash=32, dim=4)
feature age = dense(norm=standard, missing=mean)
label click, stars
input x = concat(city, shop, age)
experts bottom = mlp(x, 16)
tower t1 = mlp(bottom, 8)
tower t2 = mlp(bottom, 8)
task ctr: binary(label=click) from t1
task rating: multiclass(label=stars, classes=3) from t2
train epochs=2 batch=64 seed=5
"""
N = 1200


def mtl(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    city = rng.choice(["a", "b", "c", "d", "e"], N)
    age = rng.normal(40, 10, N).round(1).astype(object)
    age[::37] = None
    click = (rng.random(N) < np.where(city == "a", 0.6, 0.2)).astype(int)
    lines = ["city,shop,age,click,stars"]
    for i in range(N):
        lines.append(f"{city[i]},s{rng.integers(0, 60)},{'' if age[i] is None else age[i]},"
                     f"{click[i]},{rng.integers(0, 3)}")
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    (folder / "s.mtl").write_text(SPEC)
    checked = check_file(folder / "s.mtl").raise_for_errors()
    result = train(checked.spec, checked.graph, out_dir=folder / "runs", progress=False)
    return folder, result


def val_file(folder, result) -> str:
    """The run's validation rows, written to their own file."""
    ck = load_checkpoint(result.checkpoint)
    frame = load_data(ck.spec)
    _, val_rows = ck.split(frame)
    assert np.array_equal(val_rows, result.data.val.rows)
    lines = (folder / "train.csv").read_text().splitlines()
    (folder / "val.csv").write_text("\n".join([lines[0], *(lines[1 + i] for i in val_rows)])
                                    + "\n")
    return "val.csv"


def test_eval_reproduces_the_runs_validation_metrics(run):
    folder, result = run
    out = mtl("eval", "s.mtl", "--checkpoint", result.run_dir, "--data", val_file(folder, result),
              "--json", cwd=folder)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["rows"] == len(result.data.val)
    for task, values in result.best_metrics.items():
        for name, v in values.items():
            assert got["metrics"][task][name] == pytest.approx(v, rel=1e-5), (task, name)


def test_predict_writes_csv_and_parquet_that_give_the_same_metrics(run):
    folder, result = run
    name = val_file(folder, result)
    for out_name in ("p.csv", "p.parquet"):
        out = mtl("predict", "s.mtl", "--checkpoint", result.checkpoint, "--data", name,
                  "--out", out_name, cwd=folder)
        assert out.returncode == 0, out.stderr
        assert f"wrote {len(result.data.val):,} predictions" in out.stdout
    table = pq.read_table(folder / "p.parquet")
    assert table.column_names == ["ctr", "rating_0", "rating_1", "rating_2"]
    csv = pacsv.read_csv(folder / "p.csv")
    np.testing.assert_allclose(csv["ctr"].to_numpy(), table["ctr"].to_numpy(), rtol=1e-6)
    p = torch.from_numpy(table["ctr"].to_numpy())
    y = result.data.val.tensors["label:ctr"]
    auc = metric("binary", "auc", torch.logit(p.double()).float(), y)
    assert auc == pytest.approx(result.best_metrics["ctr"]["auc"], rel=1e-5)
    probs = np.stack([table[f"rating_{c}"].to_numpy() for c in range(3)], 1)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_predict_needs_no_label_columns(run):
    folder, result = run
    lines = (folder / "train.csv").read_text().splitlines()[:11]
    (folder / "new.csv").write_text("\n".join(",".join(x.split(",")[:3]) for x in lines) + "\n")
    out = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "new.csv",
              "--out", "new_pred.csv", cwd=folder)
    assert out.returncode == 0, out.stderr
    assert len((folder / "new_pred.csv").read_text().splitlines()) == 11


def test_predict_keep_passes_id_columns_through(run):
    folder, result = run
    lines = (folder / "train.csv").read_text().splitlines()[:21]
    (folder / "ids.csv").write_text("\n".join(lines) + "\n")
    out = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "ids.csv",
              "--out", "kept.parquet", "--keep", "shop, city", cwd=folder)
    assert out.returncode == 0, out.stderr
    table = pq.read_table(folder / "kept.parquet")
    assert table.column_names[:3] == ["shop", "city", "ctr"]
    assert table["shop"].to_pylist() == [x.split(",")[1] for x in lines[1:]]
    plain = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "ids.csv",
                "--out", "plain.parquet", cwd=folder)
    assert plain.returncode == 0, plain.stderr
    np.testing.assert_array_equal(pq.read_table(folder / "plain.parquet")["ctr"].to_numpy(),
                                  table["ctr"].to_numpy())
    bad = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "ids.csv",
              "--out", "k.csv", "--keep", "shops", cwd=folder)
    assert bad.returncode == 1 and "shops" in bad.stderr and "Traceback" not in bad.stderr
    clash = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "ids.csv",
                "--out", "k.csv", "--keep", "ctr", cwd=folder)
    assert clash.returncode == 1 and "the predictions have a column of that name" in clash.stderr


def test_predict_reads_a_headerless_file_without_its_label_columns(run):
    folder, result = run
    names = "city, shop, age, click, stars"
    (folder / "h.mtl").write_text(SPEC.replace('data csv("train.csv", ',
                                               f'data csv("train.csv", header=false, '
                                               f'columns=[{names}], '))
    lines = (folder / "train.csv").read_text().splitlines()[1:11]
    (folder / "raw.txt").write_text("\n".join(",".join(x.split(",")[:3]) for x in lines) + "\n")
    (folder / "new.csv").write_text("city,shop,age\n" + (folder / "raw.txt").read_text())
    out = mtl("predict", "h.mtl", "--checkpoint", result.run_dir, "--data", "raw.txt",
              "--out", "raw_pred.csv", cwd=folder)
    assert out.returncode == 0, out.stderr
    ref = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "new.csv",
              "--out", "ref_pred.csv", cwd=folder)
    assert ref.returncode == 0, ref.stderr
    assert (folder / "raw_pred.csv").read_text() == (folder / "ref_pred.csv").read_text()


def test_eval_and_predict_errors_exit_with_their_codes(run):
    folder, result = run
    lines = (folder / "train.csv").read_text().splitlines()[:11]
    (folder / "nolabel.csv").write_text("\n".join(",".join(x.split(",")[:3]) for x in lines))
    out = mtl("eval", "s.mtl", "--checkpoint", result.run_dir, "--data", "nolabel.csv",
              cwd=folder)
    assert out.returncode == 1 and "column 'click' is not in the data" in out.stderr
    assert "Traceback" not in out.stderr
    out = mtl("predict", "s.mtl", "--checkpoint", result.run_dir, "--data", "nolabel.csv",
              "--out", "p.txt", cwd=folder)
    assert out.returncode == 2 and ".csv or .parquet" in out.stderr
    out = mtl("eval", "s.mtl", "--checkpoint", folder / "nowhere", "--data", "val.csv",
              cwd=folder)
    assert out.returncode == 2 and "no checkpoint" in out.stderr
