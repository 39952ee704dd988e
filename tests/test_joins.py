"""Joins (`data csv(..., join=[csv(..., on=KEY, how=inner|left)])`): a MovieLens-like ratings
file joined with its user and item tables (tests/fixtures/movielens/), in every path that reads
data: loading, named split files, Parquet, `mtl check`'s sample, predict and eval."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from mtl_dsl.api import check_file, check_text
from mtl_dsl.data.frames import load, load_all
from mtl_dsl.data.sample import check_sample
from mtl_dsl.data.sources import read_file
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.training.loop import train

FIXTURE = ROOT / "tests" / "fixtures" / "movielens"
USERS = 'csv("users.csv", on=user_id, sep="|")'
ITEMS = 'csv("items.csv", on=item_id, encoding="latin-1"'
SMALL = """label liked = rating >= 4
feature user_id = sparse(dim=4)
tower t = mlp(user_id, 4)
task like: binary(label=liked) from t
"""


@pytest.fixture
def ml(tmp_path):
    for f in FIXTURE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def spec_with(folder, data_line: str):
    text = (FIXTURE / "ml.mtl").read_text().splitlines()
    text = [data_line if line.startswith("data ") else line for line in text]
    (folder / "s.mtl").write_text("\n".join(text) + "\n")
    return check_file(folder / "s.mtl").raise_for_errors().spec


def by_hand(folder) -> list[dict]:
    """The join computed row by row, in the ratings file's order (None: no item row)."""
    users = {r["user_id"]: r for r in _rows(folder / "users.csv", "|", "utf-8")}
    items = {r["item_id"]: r for r in _rows(folder / "items.csv", ",", "latin-1")}
    out = []
    for r in _rows(folder / "ratings.csv", ",", "utf-8"):
        item = items.get(r["item_id"])
        out.append(r | users[r["user_id"]] | (item or {"title": None, "genre": None}))
    return out


def _rows(path, sep: str, encoding: str) -> list[dict]:
    lines = path.read_bytes().decode(encoding).splitlines()
    names = lines[0].split(sep)
    return [dict(zip(names, line.split(sep))) for line in lines[1:]]


def test_left_join_keeps_every_row_in_order_and_warns(ml, capsys):
    spec = spec_with(ml, f'data csv("ratings.csv", join=[{USERS}, {ITEMS}, how=left)])')
    frame = load(spec)
    expected = by_hand(ml)
    assert len(frame["rating"]) == len(expected) == 60
    assert frame["rating"].tolist() == [int(r["rating"]) for r in expected]
    assert frame["age"].tolist() == [int(r["age"]) for r in expected]
    assert list(frame["genre"]) == [r["genre"] for r in expected]
    err = capsys.readouterr().err
    unmatched = sum(r["item_id"] == "9" for r in expected)
    assert unmatched > 0
    assert f"{unmatched} of 60 rows of ratings.csv have no match on item_id" in err, err
    assert "how=left" in err


def test_inner_join_drops_unmatched_rows_and_reads_latin1(ml, capsys):
    spec = spec_with(ml, f'data csv("ratings.csv", join=[{USERS}, {ITEMS})])')
    frame = load_all(spec)["all"]
    kept = [r for r in by_hand(ml) if r["item_id"] != "9"]
    assert frame["item_id"].tolist() == [int(r["item_id"]) for r in kept]
    whole = read_file(spec.data, spec.base_dir, "ratings.csv")  # every column: titles too
    assert "Film 3 (café)" in set(whole.column("title").to_pylist())  # read as latin-1
    assert whole.column_names[:4] == ["user_id", "item_id", "rating", "age"]
    assert "dropped (how=inner)" in capsys.readouterr().err


def test_every_named_file_is_joined_and_parquet_sides_work(ml):
    ratings = pacsv.read_csv(ml / "ratings.csv")
    pq.write_table(ratings.slice(0, 40), ml / "train.parquet")
    pq.write_table(ratings.slice(40, 20), ml / "val.parquet")
    pq.write_table(pacsv.read_csv(ml / "users.csv", parse_options=pacsv.ParseOptions(
        delimiter="|")), ml / "users.parquet")
    spec = spec_with(ml, 'data parquet(train="train.parquet", val="val.parquet", '
                         f'join=[parquet("users.parquet", on=user_id), {ITEMS}, how=left)])')
    parts = load_all(spec)
    expected = by_hand(ml)
    assert parts["val"]["age"].tolist() == [int(r["age"]) for r in expected[40:]]
    assert list(parts["train"]["genre"]) == [r["genre"] for r in expected[:40]]


def test_join_errors_name_the_table_and_the_key(ml):
    def error(line: str) -> str:
        """What `mtl check` (header-level: keys, clashes) or loading (rows) says."""
        (ml / "e.mtl").write_text(f"model m\n{line}\n{SMALL}")
        with pytest.raises(MtlError) as err:
            load(check_file(ml / "e.mtl").raise_for_errors().spec)
        return str(err.value)

    assert "key column 'uid' is not in ratings.csv" in \
        error('data csv("ratings.csv", join=[csv("users.csv", on=uid, sep="|")])')
    (ml / "twice.csv").write_text("user_id|age\n1|20\n1|30\n")
    assert "key user_id=1 appears 2 times" in \
        error('data csv("ratings.csv", join=[csv("twice.csv", on=user_id, sep="|")])')
    (ml / "other.csv").write_text("user_id|region\n100|north\n101|south\n")
    text = error('data csv("ratings.csv", join=[csv("other.csv", on=user_id, sep="|", '
                 'how=left)])')
    assert "none of the 60 rows of ratings.csv has a match on user_id" in text, text
    (ml / "clash.csv").write_text("user_id|rating\n1|3\n")
    assert "column 'rating' is in clash.csv" in \
        error('data csv("ratings.csv", join=[csv("clash.csv", on=user_id, sep="|")])')


def test_bad_join_arguments_are_spec_errors():
    text = ('model m\ndata csv("r.csv", join=[csv("u.csv", on=user_id, how=outer)])\n'
            'label y\nfeature a = dense(1)\ntower t = mlp(a, 4)\n'
            'task k: binary(label=y) from t\n')
    found = check_text(text).diagnostics
    assert any("join.0.how" in d.message and "'inner' or 'left'" in d.message
               for d in found), found
    stream = text.replace('data csv("r.csv"', 'data parquet("r.parquet", stream=true') \
        .replace("how=outer", "how=left")
    found = check_text(stream).diagnostics
    assert any(d.code == "E507" and "join=" in d.message for d in found), found


def test_check_samples_joined_rows(ml):
    spec = spec_with(ml, f'data csv("ratings.csv", join=[{USERS}, {ITEMS}, how=left)])')
    assert check_sample(spec) == []
    (ml / "users.csv").write_text("user_id|age|gender|occupation\n" +
                                  "".join(f"{u}|old|F|x\n" for u in range(1, 11)))
    found = check_sample(spec)
    assert found and "age" in found[0].message and "numeric" in found[0].message, found


def test_train_predict_eval_on_a_joined_source(ml):
    checked = check_file(FIXTURE / "ml.mtl").raise_for_errors()
    folder = train(checked.spec, checked.graph, out_dir=ml / "runs", progress=False).run_dir
    (ml / "new.csv").write_text("user_id,item_id\n1,1\n2,9\n3,2\n")
    out = subprocess.run([sys.executable, "-m", "mtl_dsl", "predict", str(FIXTURE / "ml.mtl"),
                          "--checkpoint", str(folder), "--data", str(ml / "new.csv"),
                          "--out", str(ml / "p.csv"), "--keep", "user_id,item_id"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    table = pacsv.read_csv(ml / "p.csv")
    assert table.column("user_id").to_pylist() == [1, 2, 3]
    assert table.column("item_id").to_pylist() == [1, 9, 2]
    assert np.all((table.column("like").to_numpy() >= 0) & (table.column("like").to_numpy() <= 1))
    assert "1 of 3 rows of" in out.stderr
    scored = subprocess.run([sys.executable, "-m", "mtl_dsl", "eval", str(FIXTURE / "ml.mtl"),
                             "--checkpoint", str(folder), "--data", str(ml / "ratings.csv"),
                             "--json"], capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    got = json.loads(scored.stdout)
    assert got["rows"] == 60 and set(got["metrics"]["like"]) >= {"gauc", "ndcg@5", "pr_auc"}
    assert 0 <= got["metrics"]["like"]["gauc"] <= 1
