"""Nothing crashes, nothing silent: bad values in any split, labels that match nothing, metrics
that cannot be computed, divergence beyond NaN, ragged rows, and checkpoints that are not
ours. Each test writes small data to tmp_path and asserts the exit code, the row and the
message."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import ROOT
from mtl_dsl.api import check_file, check_text
from mtl_dsl.data.prepare import prepare
from mtl_dsl.language.diagnostics import DataError
from mtl_dsl.tools.cli.main import app
from mtl_dsl.training.divergence import Divergence
from mtl_dsl.training.loop import train
from mtl_dsl.training.metrics import Undefined, metric

SPEC = """model m
data csv({data})
feature city = sparse(dim=4)
feature age = dense(norm=standard{missing})
label click, score
input x = concat(city, age)
tower t1 = mlp(x, 8)
tower t2 = mlp(x, 8)
task ctr: binary(label=click{metrics}) from t1
task reg: regression(label=score) from t2
train epochs=2 batch=32 seed=3{train}
"""


def spec_text(data: str, missing: str = "", metrics: str = "", train_: str = "") -> str:
    return SPEC.format(data=data, missing=missing, metrics=metrics, train=train_)


def rows(n: int, seed: int = 0, click: np.ndarray | None = None) -> list[list]:
    rng = np.random.default_rng(seed)
    click = rng.integers(0, 2, n) if click is None else click
    return [[rng.choice(["a", "b", "c"]), round(float(rng.normal(40, 9)), 1), int(click[i]),
             round(float(rng.normal()), 3)] for i in range(n)]


def write(path, table: list[list], header: str = "city,age,click,score") -> str:
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in table) + "\n")
    return path.name


def checked(tmp_path, text: str):
    (tmp_path / "s.mtl").write_text(text)
    return check_file(tmp_path / "s.mtl").raise_for_errors()


def data_error(tmp_path, text: str) -> str:
    with pytest.raises(DataError) as err:
        prepare(checked(tmp_path, text).spec)
    return err.value.render()


def cli(*args, cwd) -> tuple[int, str]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_overflowing_feature_value_names_file_column_and_row_in_every_split(tmp_path, part):
    files = {k: write(tmp_path / f"{k}.csv", rows(40, i)) for i, k in
             enumerate(("train", "val", "test"))}
    lines = (tmp_path / files[part]).read_text().splitlines()
    cells = lines[5].split(",")
    cells[1] = "1e308"  # data row 5: beyond float32, inf after the cast
    lines[5] = ",".join(cells)
    (tmp_path / files[part]).write_text("\n".join(lines) + "\n")
    data = ", ".join(f'{k}="{v}"' for k, v in files.items())
    msg = data_error(tmp_path, spec_text(data, missing=", missing=mean"))
    assert f"{part}.csv: column 'age'" in msg and "row 5" in msg and "float32" in msg, msg


def test_inf_and_label_overflow_are_errors_even_with_missing_mean(tmp_path):
    table = rows(40)
    table[6][1] = "inf"
    write(tmp_path / "d.csv", table)
    msg = data_error(tmp_path, spec_text('"d.csv"', missing=", missing=mean"))
    assert "d.csv: column 'age'" in msg and "infinite value at row 7" in msg, msg
    table = rows(40)
    table[2][3] = "1e308"
    write(tmp_path / "d.csv", table)
    msg = data_error(tmp_path, spec_text('"d.csv"'))
    assert "column 'score' (label of regression task 'reg')" in msg and "row 3" in msg, msg


def test_nan_in_validation_file_names_the_file_and_row(tmp_path):
    write(tmp_path / "a.csv", rows(40))
    table = rows(20, 1)
    table[3][1] = ""
    write(tmp_path / "b.csv", table)
    msg = data_error(tmp_path, spec_text('train="a.csv", val="b.csv"'))
    assert "b.csv: column 'age'" in msg and "the first at row 4" in msg, msg


# --------------------------------------------------------------------------- derived labels

INCOME = """model census
data csv({data})
feature age = dense(norm=standard)
label rich = income == ">50K"
input x = concat(age)
tower t = mlp(x, 4)
task r: binary(label=rich{metrics}) from t
train epochs=1 batch=32 seed=1
"""


def income_file(path, n: int, suffix: str = "", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = [f"{int(rng.integers(20, 70))},{'>50K' if i % 3 else '<=50K'}{suffix}"
             for i in range(n)]
    path.write_text("age,income\n" + "\n".join(lines) + "\n")
    return path.name


def test_derived_label_matching_no_row_of_the_test_file_names_it(tmp_path):
    income_file(tmp_path / "tr.csv", 60)
    income_file(tmp_path / "te.csv", 30, suffix=".")  # ">50K." as in the UCI test file
    text = INCOME.format(data='train="tr.csv", test="te.csv"', metrics="")
    msg = data_error(tmp_path, text)
    assert "te.csv: label 'rich' matches no rows" in msg and "'>50K.'" in msg, msg


def test_eval_says_why_a_metric_cannot_be_computed(tmp_path):
    income_file(tmp_path / "tr.csv", 60)
    result = train(checked(tmp_path, INCOME.format(data='"tr.csv"', metrics="")).spec,
                   out_dir=tmp_path / "runs", progress=False)
    # labels that match nothing in this file: an error naming it
    income_file(tmp_path / "dot.csv", 20, suffix=".")
    code, out = cli("eval", "s.mtl", "--checkpoint", result.run_dir, "--data", "dot.csv",
                    cwd=tmp_path)
    assert code == 1 and "dot.csv: label 'rich' matches no rows" in out, out
    # one class: AUC is n/a with its reason, logloss is still computed (exit 0)
    (tmp_path / "one.csv").write_text("age,income\n30,>50K\n40,>50K\n")
    code, out = cli("eval", "s.mtl", "--checkpoint", result.run_dir, "--data", "one.csv",
                    cwd=tmp_path)
    assert code == 0 and "auc=n/a (every label is 1: AUC needs both classes)" in out, out
    assert "nan" not in out
    code, out = cli("eval", "s.mtl", "--checkpoint", result.run_dir, "--data", "one.csv",
                    "--json", cwd=tmp_path)
    got = json.loads(out)
    assert got["metrics"]["r"]["auc"] is None and "both classes" in got["notes"]["r"]["auc"]


def test_eval_exits_1_when_no_metric_can_be_computed(tmp_path):
    income_file(tmp_path / "tr.csv", 60)
    text = INCOME.format(data='"tr.csv"', metrics=", metrics=[auc]")
    result = train(checked(tmp_path, text).spec, out_dir=tmp_path / "runs", progress=False)
    (tmp_path / "one.csv").write_text("age,income\n30,>50K\n40,>50K\n")
    code, out = cli("eval", "s.mtl", "--checkpoint", result.run_dir, "--data", "one.csv",
                    cwd=tmp_path)
    assert code == 1 and "no metric can be computed" in out and "r.auc: every label" in out


# --------------------------------------------------------------------------- metrics


def test_undefined_metrics_carry_their_reason():
    auc = metric("binary", "auc", torch.zeros(4), torch.ones(4))
    assert isinstance(auc, Undefined) and auc != auc and "both classes" in auc.reason
    assert f"{auc:.4f}" == f"n/a ({auc.reason})"
    assert "no rows" in metric("regression", "mse", torch.zeros(0), torch.zeros(0)).reason
    bad = metric("binary", "logloss", torch.tensor([float("inf"), 0.0]), torch.tensor([0., 1.]))
    assert "not finite" in bad.reason


def test_monitor_that_cannot_be_computed_falls_back_to_the_validation_loss(tmp_path, capsys):
    write(tmp_path / "a.csv", rows(80))
    write(tmp_path / "b.csv", rows(20, 1, click=np.ones(20, int)))  # one class: AUC undefined
    write(tmp_path / "c.csv", rows(20, 2, click=np.zeros(20, int)))
    text = spec_text('train="a.csv", val="b.csv", test="c.csv"', train_=" monitor=ctr.auc")
    result = train(checked(tmp_path, text).spec, out_dir=tmp_path / "runs", progress=False)
    assert "chosen by the sum of the validation losses" in capsys.readouterr().err
    assert result.best_epoch >= 1  # chosen on the validation loss, not "epoch 0" on a NaN
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert all("both classes" in r["notes"]["ctr"]["auc"] for r in epochs)
    test = next(r for r in records if r["type"] == "test")
    assert test["test"]["ctr"]["auc"] is None and "every label is 0" in test["notes"]["ctr"]["auc"]
    ck = torch.load(result.checkpoint, weights_only=True)  # still only plain types
    assert ck["best_epoch"] == result.best_epoch


def test_fallback_is_said(tmp_path, capsys):
    from mtl_dsl.training.stopping import EarlyStopping

    stopping = EarlyStopping("ctr.auc", None, ["ctr"])
    stopping.update(1, {"ctr": {"loss": 0.5, "auc": Undefined("every label is 1")}})
    assert stopping.best_epoch == 1 and "every label is 1" in stopping.fallback
    assert "note: the monitor ctr.auc cannot be computed" in capsys.readouterr().err


# --------------------------------------------------------------------------- divergence


def esmm(rows_: int, lr: float):
    spec = check_file(ROOT / "specs" / "esmm.mtl").raise_for_errors().spec
    data = spec.data.model_copy(update={"params": spec.data.params.model_copy(
        update={"rows": rows_})})
    params = spec.train.params.model_copy(update={"lr": lr})
    return spec.model_copy(update={"data": data, "train": spec.train.model_copy(
        update={"params": params})})


def test_exploding_loss_is_divergence_e702(tmp_path):
    with pytest.raises(DataError) as err:
        train(esmm(2000, 1e6), epochs=2, out_dir=tmp_path, progress=False)
    d = err.value.diagnostics[0]
    assert d.code == "E702" and "times the untrained model's" in d.message
    assert "lower `train lr=` (it is 1e+06)" in d.hint


def test_a_normal_run_never_trips_the_detector(tmp_path):
    result = train(esmm(2000, 2e-3), epochs=2, out_dir=tmp_path, progress=False)
    assert result.best_epoch >= 1


def test_detector_needs_consecutive_intervals_and_stops_on_non_finite():
    d = Divergence({"a": 0.7}, lr=1.0)
    for v in (2000.0, 2000.0, 0.5, 2000.0, 2000.0):  # never three in a row
        d.check({"a": v}, 1, 1)
    with pytest.raises(DataError, match="3 logged intervals in a row"):
        d.check({"a": 2000.0}, 1, 2)
    with pytest.raises(DataError, match="is nan"):
        Divergence({"a": 0.7}, lr=1.0).check({"a": float("nan")}, 1, 1)


# --------------------------------------------------------------------------- files


def test_ragged_row_gives_its_row_number(tmp_path):
    lines = ["city,age,click,score"] + [",".join(map(str, r)) for r in rows(30)]
    lines[8] += ",extra"
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    c = check_text(spec_text('"d.csv"'), path=str(tmp_path / "s.mtl"))
    d = next(d for d in c.diagnostics if d.code == "E502")
    assert "row 8 has 5 field(s), but the rows before it have 4" in d.message, d.message


def test_unreadable_file_message_never_quotes_a_line(tmp_path):
    line = "lorem ipsum " + "dolor sit amet " * 20 + ", consectetur, adipiscing"
    (tmp_path / "text.csv").write_text("city,age,click,score\na,1,0,2\n" + (line + "\n") * 5)
    (tmp_path / "s.mtl").write_text(spec_text('"text.csv"'))
    code, out = cli("check", "s.mtl", cwd=tmp_path)
    assert code == 1 and "E502" in out and "row 2" in out
    assert "dolor" not in out and "lorem" not in out, out


# --------------------------------------------------------------------------- checkpoints


class Foreign:
    """A class torch's safe unpickler refuses (it could run code when unpickled)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck")
    write(folder / "d.csv", rows(120))
    (folder / "s.mtl").write_text(spec_text('"d.csv"'))
    result = train(check_file(folder / "s.mtl").raise_for_errors().spec,
                   out_dir=folder / "runs", progress=False)
    return folder, result


def bad_checkpoints(folder, good) -> dict[str, str]:
    data = good.read_bytes()
    (folder / "trunc.pt").write_bytes(data[:len(data) // 2])
    (folder / "text.pt").write_text("not a checkpoint\n" * 20)
    with zipfile.ZipFile(folder / "zip.pt", "w") as z:
        z.writestr("model/data.txt", "hello")
    torch.save({"x": Foreign()}, folder / "evil.pt")
    with (folder / "evil2.pt").open("wb") as f:
        pickle.dump({"x": Foreign()}, f, protocol=2)
    ck = torch.load(good, weights_only=True)
    torch.save(ck | {"format": "mtl-dsl/1"}, folder / "old.pt")
    torch.save({"weights": torch.zeros(2)}, folder / "dict.pt")
    (folder / "dir.pt").mkdir(exist_ok=True)
    (folder / "dir.pt" / "x").write_text("")
    return {"trunc.pt": "truncated", "text.pt": "cannot read", "zip.pt": "cannot read",
            "evil.pt": "Foreign", "evil2.pt": "Foreign", "old.pt": "format 'mtl-dsl/1'",
            "dict.pt": "not an mtl-dsl checkpoint", "dir.pt/x": "cannot read",
            os.devnull: "is not a file"}


def test_bad_checkpoints_are_clear_errors_exit_1(trained):
    folder, result = trained
    for name, expected in bad_checkpoints(folder, result.checkpoint).items():
        code, out = cli("eval", "s.mtl", "--checkpoint", name, "--data", "d.csv", cwd=folder)
        assert code == 1, (name, out)
        assert "E703" in out and name in out and expected in out, (name, out)
        assert "weights_only" not in out and "internal error" not in out, (name, out)


def test_checkpoint_of_another_spec_is_refused_unless_forced(trained):
    folder, result = trained
    other = spec_text('"d.csv"').replace("tower t1 = mlp(x, 8)", "tower t1 = mlp(x, 16)")
    (folder / "other.mtl").write_text(other)
    code, out = cli("eval", "other.mtl", "--checkpoint", result.run_dir, "--data", "d.csv",
                    cwd=folder)
    assert code == 1 and "E704" in out, out
    assert "tower 't1': net.widths is [8] in the checkpoint, [16] in the spec" in out, out
    code, out = cli("predict", "other.mtl", "--checkpoint", result.run_dir, "--data", "d.csv",
                    "--out", "p.csv", cwd=folder)
    assert code == 1 and "E704" in out
    code, out = cli("predict", "other.mtl", "--checkpoint", result.run_dir, "--data", "d.csv",
                    "--out", "p.csv", "--force", cwd=folder)
    assert code == 0 and (folder / "p.csv").exists(), out
    moved = spec_text('"elsewhere.csv"', train_=" lr=0.5")  # data and train settings may differ
    (folder / "moved.mtl").write_text(moved)
    code, out = cli("eval", "moved.mtl", "--checkpoint", result.run_dir, "--data", "d.csv",
                    cwd=folder)
    assert code == 0, out


def test_streamed_parquet_error_counts_rows_from_the_start_of_the_data(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "parts").mkdir()
    for i in range(2):
        table = rows(50, i)
        if i == 1:
            table[9][1] = 1e308  # the 10th row of the second file: row 60 of the data
        cols = list(zip(*table))
        pq.write_table(pa.table({"city": list(cols[0]), "age": [float(v) for v in cols[1]],
                                 "click": list(cols[2]), "score": list(cols[3])}),
                       tmp_path / "parts" / f"p{i}.parquet")
    text = spec_text('"parts/"').replace('data csv("parts/")',
                                         'data parquet("parts/", stream=true)')
    msg = data_error(tmp_path, text)
    assert "parts: column 'age'" in msg and "at row 60" in msg, msg


def test_json_summaries_hold_null_not_nan_for_a_metric_that_cannot_be_computed():
    import json

    from mtl_dsl.tools.cli.spec_commands import _json_metrics
    from mtl_dsl.training.metrics import Undefined, notes

    metrics = {"ctr": {"auc": Undefined("every label is 0: AUC needs both classes"),
                       "logloss": 0.25}}
    text = json.dumps(_json_metrics(metrics), allow_nan=False)  # raises on a NaN
    assert json.loads(text) == {"ctr": {"auc": None, "logloss": 0.25}}
    assert notes(metrics) == {"ctr": {"auc": "every label is 0: AUC needs both classes"}}
