"""Real data: every file shape the readers take, splits, encoders fitted on training rows
only, hashing, missing values, sequences, and data errors that name the column and row."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import ROOT
from mtl_dsl.data.encoders import Encoders
from mtl_dsl.data.frames import load
from mtl_dsl.data.labels import encode_labels
from mtl_dsl.data.prepare import prepare
from mtl_dsl.language.diagnostics import DataError
from mtl_dsl.api import check_file, check_text
from mtl_dsl.training.loop import train

N = 300
MODEL = """
feature city = sparse(dim=4)
feature age = dense(norm=standard)
label click, buy
input x = concat(city, age)
experts bottom = mlp(x, 8)
tower t1 = mlp(bottom, 4)
tower t2 = mlp(bottom, 4)
task ctr: binary(label=click) from t1
task cvr: binary(label=buy) from t2
train epochs=1 batch=64 seed=3
"""


def rows(n: int = N, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(int)
    return {"city": rng.choice(["Paris", "Rome", "Oslo", "Lima"], n).tolist(),
            "age": np.round(rng.normal(40, 10, n), 1).tolist(),
            "click": click.tolist(),
            "buy": (click & (rng.random(n) < 0.5)).astype(int).tolist()}


def write_text(path, data: dict[str, list], sep: str = ",", header: bool = True,
               na_rows: tuple[int, ...] = (), na: str = "?", pad: str = "") -> None:
    """A CSV written by hand: `pad` after each separator (like raw UCI files), NA tokens."""
    lines = [sep.join(data)] if header else []
    for i in range(len(data["city"])):
        cells = [str(data[c][i]) for c in data]
        if i in na_rows:
            cells[0] = na
        lines.append((sep + pad).join(cells))
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def spec_at(folder, data_line: str, model: str = MODEL):
    (folder / "s.mtl").write_text(f"model m\n{data_line}\n{model}")
    return check_file(folder / "s.mtl").raise_for_errors().spec


def frame_of(spec) -> dict[str, np.ndarray]:
    return load(spec)


def assert_same(frame, data: dict[str, list], na_rows=()) -> None:
    expected_city = [None if i in na_rows else c for i, c in enumerate(data["city"])]
    assert list(frame["city"]) == expected_city
    np.testing.assert_allclose(frame["age"], data["age"])
    assert frame["click"].tolist() == data["click"]


# --------------------------------------------------------------------------
# Readers: every shape gives the same frame
# --------------------------------------------------------------------------

def test_csv_with_header(tmp_path):
    data = rows()
    write_text(tmp_path / "d.csv", data)
    assert_same(frame_of(spec_at(tmp_path, 'data csv("d.csv")')), data)


def test_csv_without_header_named_in_the_spec_any_separator(tmp_path):
    data = rows()
    write_text(tmp_path / "d.txt", data, sep=";", header=False)
    spec = spec_at(tmp_path, 'data csv("d.txt", sep=";", header=false, '
                             'columns=[city, age, click, buy])')
    assert_same(frame_of(spec), data)


def test_gzip_csv_padded_fields_and_na_tokens(tmp_path):
    """The raw UCI shape: ', ' between fields, '?' for unknown, gzip."""
    data = rows()
    write_text(tmp_path / "d.csv.gz", data, header=False, pad=" ", na_rows=(3, 17))
    spec = spec_at(tmp_path, 'data csv("d.csv.gz", header=false, columns=[city, age, click, '
                             'buy])')
    frame = frame_of(spec)
    assert_same(frame, data, na_rows=(3, 17))  # fields trimmed, '?' is missing
    assert frame["age"].dtype.kind == "f"  # ' 40.1' is still a number


def test_custom_na_tokens(tmp_path):
    data = rows()
    write_text(tmp_path / "d.csv", data, na_rows=(0, 5), na="unknown")
    spec = spec_at(tmp_path, 'data csv("d.csv", na=["unknown"])')
    assert_same(frame_of(spec), data, na_rows=(0, 5))


def test_skip_rows_and_comment_read_an_adult_like_file(tmp_path):
    """The UCI Adult test file starts with one junk line (`|1x3 Cross validator`); other
    files carry comment lines. Without skip_rows= the error names the row and the fix."""
    data = rows()
    write_text(tmp_path / "d.csv", data)
    body = (tmp_path / "d.csv").read_text().splitlines()
    (tmp_path / "adult.csv").write_text("|1x3 Cross validator\n" + "\n".join(body) + "\n")
    spec = spec_at(tmp_path, 'data csv("adult.csv", skip_rows=1)')
    assert_same(frame_of(spec), data)
    (tmp_path / "c.csv").write_text("# made by hand\n" + "\n".join(body[:5] + ["# a note, with a comma"]
                                                          + body[5:]) + "\n")
    assert_same(frame_of(spec_at(tmp_path, 'data csv("c.csv", comment="#")')), data)
    text = prepare_error_at(tmp_path, 'data csv("adult.csv")')
    assert "row 1 has 4 field(s), but the header has 1" in text, text
    (tmp_path / "adult.csv").write_text("|1x3 Cross validator\n" + "\n".join(body[:4] + ["7,8"]
                                                                        + body[4:]) + "\n")
    text = prepare_error_at(tmp_path, 'data csv("adult.csv", skip_rows=1)')
    assert "row 4 has 2 field(s), but the rows before it have 4" in text, text  # data rows
    assert "skip_rows=" in text and "comment=" in text, text


def test_encoding_reads_a_latin1_file(tmp_path):
    data = rows()
    data["city"] = ["Bogotá" if c == "Lima" else c for c in data["city"]]
    write_text(tmp_path / "d.csv", data)
    (tmp_path / "l.csv").write_bytes((tmp_path / "d.csv").read_text().encode("latin-1"))
    assert_same(frame_of(spec_at(tmp_path, 'data csv("l.csv", encoding="latin-1")')), data)
    text = prepare_error_at(tmp_path, 'data csv("l.csv")')  # read as UTF-8: said, not a crash
    assert "l.csv: column 'city' holds text that is not valid utf8" in text, text
    assert 'encoding="latin-1"' in text
    bad = check_text('model m\ndata csv("l.csv", encoding="klingon")\n' + MODEL)
    assert any("unknown text encoding 'klingon'" in d.message for d in bad.diagnostics)


def prepare_error_at(tmp_path, data_line: str) -> str:
    """The rendered DataError of preparing the spec with this data line (files in place)."""
    (tmp_path / "s.mtl").write_text(f"model m\n{data_line}\n{MODEL}")
    spec = check_text((tmp_path / "s.mtl").read_text(), "s.mtl", str(tmp_path / "s.mtl")).spec
    with pytest.raises(DataError) as err:
        prepare(spec)
    return err.value.render()


def test_parquet_file_and_folder(tmp_path):
    data = rows()
    table = pa.table(data)
    pq.write_table(table, tmp_path / "d.parquet")
    assert_same(frame_of(spec_at(tmp_path, 'data parquet("d.parquet")')), data)
    (tmp_path / "parts").mkdir()
    for i, start in enumerate(range(0, N, 100)):
        pq.write_table(table.slice(start, 100), tmp_path / "parts" / f"part-{i}.parquet")
    assert_same(frame_of(spec_at(tmp_path, 'data parquet("parts")')), data)


@pytest.mark.parametrize("rows_wanted", [0, 1, 7, 8, 20, 1000])
def test_the_first_rows_of_a_parquet_file_or_folder(tmp_path, rows_wanted):
    """`mtl check`'s sample of a Parquet file (its own reader, across row groups) is the
    file's first rows, as the folder's dataset reader gives them, columns as asked."""
    from mtl_dsl.data.sources import _parquet_head

    table = pa.table({"a": list(range(50)), "b": [f"t{i}" for i in range(50)],
                      "c": [i / 2 for i in range(50)]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=7)
    (tmp_path / "parts").mkdir()
    pq.write_table(table, tmp_path / "parts" / "part-0.parquet", row_group_size=7)
    want = table.select(["c", "a"]).slice(0, rows_wanted)
    for path in (tmp_path / "d.parquet", tmp_path / "parts"):
        got = _parquet_head(path, ["c", "a"], rows_wanted)
        assert got.column_names == ["c", "a"] and got.num_rows == min(rows_wanted, 50)
        assert got.equals(want)
    assert _parquet_head(tmp_path / "d.parquet", None, 9).equals(table.slice(0, 9))


def test_columns_that_do_not_match_the_file_are_reported_at_the_data_line(tmp_path):
    write_text(tmp_path / "d.csv", rows(), header=False)
    (tmp_path / "s.mtl").write_text('model m\ndata csv("d.csv", header=false, '
                                    'columns=[city, age, click])\n' + MODEL)
    checked = check_file(tmp_path / "s.mtl")
    found = [d for d in checked.diagnostics if d.code == "E502"]
    assert found and "4 columns per row, but columns= names 3" in found[0].message
    assert found[0].span.line == 2


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------

def test_three_way_split_is_seeded_disjoint_and_stratified(tmp_path):
    data = rows(1000)
    write_text(tmp_path / "d.csv", data)
    spec = spec_at(tmp_path, 'data csv("d.csv", split=[0.6, 0.2, 0.2], stratify=buy)')
    p, q = prepare(spec), prepare(spec)
    sizes = (len(p.train), len(p.val), len(p.test))
    assert sizes == pytest.approx((600, 200, 200), abs=2)
    parts = [set(p.train.rows), set(p.val.rows), set(p.test.rows)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert np.array_equal(p.test.rows, q.test.rows)
    buy = np.array(data["buy"])
    rates = [buy[list(s)].mean() for s in parts]
    assert max(rates) - min(rates) < 0.01  # stratified on buy=
    other = prepare(spec, seed=4)
    assert not np.array_equal(other.test.rows, p.test.rows)


def test_named_train_val_test_files(tmp_path):
    for name, n, seed in (("a.csv", 200, 1), ("b.csv", 60, 2), ("c.csv", 40, 3)):
        write_text(tmp_path / name, rows(n, seed))
    spec = spec_at(tmp_path, 'data csv(train="a.csv", val="b.csv", test="c.csv")')
    p = prepare(spec)
    assert (len(p.train), len(p.val), len(p.test)) == (200, 60, 40)
    assert p.val.tensors["label:ctr"].tolist() == rows(60, 2)["click"]
    # without a val file, validation rows are split off the training file (train val=)
    spec = spec_at(tmp_path, 'data csv(train="a.csv", test="c.csv")')
    p = prepare(spec)
    assert (len(p.train), len(p.val), len(p.test)) == (160, 40, 40)


def test_test_metrics_are_reported_once_at_the_end(tmp_path):
    write_text(tmp_path / "d.csv", rows(600))
    spec = spec_at(tmp_path, 'data csv("d.csv", split=[0.6, 0.2, 0.2], stratify=click)')
    result = train(spec, epochs=2, out_dir=tmp_path / "runs", progress=False)
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if r["type"] == "test"]
    assert len(tests) == 1 and records[-1]["type"] == "end"
    assert tests[0]["test_rows"] == len(result.data.test)
    assert records[-1]["test"] == tests[0]["test"] == result.test_metrics
    assert all("test" not in r for r in records if r["type"] == "epoch")  # never for selection
    assert set(result.test_metrics["ctr"]) == {"loss", "auc", "logloss"}


# --------------------------------------------------------------------------
# Encoders: fitted on the training split only, stored, applied to any frame
# --------------------------------------------------------------------------

def test_vocab_and_normalisation_are_fitted_on_training_rows_only(tmp_path):
    train_rows, val_rows = rows(200, 1), rows(50, 2)
    val_rows["city"] = ["Tokyo"] * 50  # a value only validation has
    val_rows["age"] = [1e6] * 50  # would move the mean and std if it leaked
    write_text(tmp_path / "a.csv", train_rows)
    write_text(tmp_path / "b.csv", val_rows)
    spec = spec_at(tmp_path, 'data csv(train="a.csv", val="b.csv")')
    p = prepare(spec)
    assert "Tokyo" not in p.encoders.vocabs["city"].keys
    assert p.val.tensors["city"].unique().tolist() == [0]  # out of vocabulary
    age = np.array(train_rows["age"])
    scaler = p.encoders.scalers["age"]
    assert scaler.shift[0] == pytest.approx(age.mean())
    assert scaler.scale[0] == pytest.approx(age.std())
    # and on one split file: the statistics are those of the training rows
    write_text(tmp_path / "all.csv", rows(400, 5))
    spec = spec_at(tmp_path, 'data csv("all.csv", split=[0.5, 0.5])')
    p = prepare(spec)
    all_age = np.array(rows(400, 5)["age"])
    assert p.encoders.scalers["age"].shift[0] == pytest.approx(all_age[p.train.rows].mean())
    assert p.encoders.scalers["age"].shift[0] != pytest.approx(all_age.mean(), abs=1e-9)


def test_hash_buckets_missing_values_and_min_count(tmp_path):
    data = rows(400)
    data["age"][7] = "NA"
    write_text(tmp_path / "d.csv", data, na_rows=(2,))
    model = MODEL.replace("sparse(dim=4)", "sparse(hash=16, dim=4)") \
                 .replace("dense(norm=standard)", "dense(norm=standard, missing=mean)")
    spec = spec_at(tmp_path, 'data csv("d.csv")', model)
    p = prepare(spec)
    enc = p.encoders
    assert enc.vocab_sizes() == {"city": 17}
    ids = enc.encode({"city": np.array(["Paris", "Paris", None], dtype=object),
                      "age": np.array([1.0, np.nan, 3.0])})
    assert ids["city"][0] == ids["city"][1] != 0 and ids["city"][2] == 0  # missing -> 0
    assert 1 <= ids["city"][0] <= 16
    again = Encoders.from_dict(json.loads(json.dumps(enc.as_dict())))  # as checkpointed
    np.testing.assert_array_equal(again.encode({"city": np.array(["Rome"], dtype=object),
                                                "age": np.array([2.0])})["city"],
                                  enc.encode({"city": np.array(["Rome"], dtype=object),
                                              "age": np.array([2.0])})["city"])
    s = enc.scalers["age"]
    assert ids["age"][1, 0] == pytest.approx((s.fill[0] - s.shift[0]) / s.scale[0])
    train_age = np.array([float(a) if a != "NA" else np.nan for a in data["age"]])[p.train.rows]
    assert s.fill[0] == pytest.approx(np.nanmean(train_age))
    zero = spec_at(tmp_path, 'data csv("d.csv")',
                   MODEL.replace("dense(norm=standard)", "dense(norm=none, missing=zero)"))
    assert prepare(zero).encoders.scalers["age"].fill == [0.0]


def test_min_count_sends_rare_values_to_the_unknown_id(tmp_path):
    data = rows(200)
    data["city"][:3] = ["Quito"] * 3
    write_text(tmp_path / "d.csv", data)
    spec = spec_at(tmp_path, 'data csv("d.csv", split=[0.5, 0.5])',
                   MODEL.replace("sparse(dim=4)", "sparse(dim=4, min_count=5)"))
    assert "Quito" not in prepare(spec).encoders.vocabs["city"].keys


def test_sequence_features_are_padded_and_pooled(tmp_path):
    data = rows(200)
    data["hist"] = ["Paris|Rome", "", "Oslo|Oslo|Lima|Rome|Paris"] * 66 + ["Rome", "Lima"]
    write_text(tmp_path / "d.csv", data)
    model = MODEL.replace("feature age", "feature hist = sequence(share=city, pool=mean, "
                                         "max_len=3)\nfeature age") \
                 .replace("concat(city, age)", "concat(city, hist, age)")
    spec = spec_at(tmp_path, 'data csv("d.csv")', model)
    p = prepare(spec, seed=0)
    enc = p.encoders
    ids = enc.encode({"city": np.array(["Paris"] * 3, dtype=object),
                      "hist": np.array(["Paris|Rome", None, "Oslo|Oslo|Lima|Rome|Paris"],
                                       dtype=object),
                      "age": np.array([1.0, 2.0, 3.0])})["hist"]
    v = enc.vocabs["city"].index
    assert ids.tolist() == [[v["Paris"], v["Rome"], -1], [-1, -1, -1],
                            [v["Lima"], v["Rome"], v["Paris"]]]  # the last max_len ids
    from mtl_dsl.model.compiler import compile_model

    checked = check_file(tmp_path / "s.mtl")
    model = compile_model(checked.spec, checked.graph, enc.vocab_sizes())
    batch = {"city": torch.zeros(3, dtype=torch.long), "hist": torch.from_numpy(ids)}
    pooled = model.embeddings.pool(batch)["hist"]
    rows_of = model.embeddings.rows("city")
    torch.testing.assert_close(pooled[0], rows_of[ids[0, :2]].mean(0))
    torch.testing.assert_close(pooled[1], torch.zeros(4))
    torch.testing.assert_close(pooled[2], rows_of[ids[2]].mean(0))
    result = train(checked.spec, epochs=1, out_dir=tmp_path / "runs", progress=False)
    assert result.best_epoch == 1


# --------------------------------------------------------------------------
# Data errors name the column and the row
# --------------------------------------------------------------------------

def prepare_error(tmp_path, data: dict, model: str = MODEL, data_line: str = 'data csv("d.csv")'
                  ) -> str:
    write_text(tmp_path / "d.csv", data)
    (tmp_path / "s.mtl").write_text(f"model m\n{data_line}\n{model}")
    spec = check_text((tmp_path / "s.mtl").read_text(), "s.mtl", str(tmp_path / "s.mtl")).spec
    with pytest.raises(DataError) as err:
        prepare(spec)
    return err.value.render()


def test_a_derived_label_that_matches_no_rows(tmp_path):
    data = rows()
    data["income"] = ["- 50000."] * N
    model = MODEL.replace("label click, buy", 'label click, buy\nlabel rich = income == "50000+"') \
                 .replace("label=buy", "label=rich")
    text = prepare_error(tmp_path, data, model)
    assert "label 'rich' matches no rows" in text and "column 'income' holds '- 50000.'" in text


def test_a_missing_column(tmp_path):
    data = rows()
    del data["age"]
    text = prepare_error(tmp_path, data)
    assert "column 'age' is not in the data; feature 'age' reads it" in text


def test_a_non_numeric_value_in_a_dense_column(tmp_path):
    data = rows()
    data["age"][41] = "forty"
    text = prepare_error(tmp_path, data)
    assert "column 'age' (dense feature 'age') must be numeric; row 42 has 'forty'" in text


def test_a_binary_label_that_is_not_0_or_1(tmp_path):
    data = rows()
    data["buy"][9] = 2
    text = prepare_error(tmp_path, data)
    assert "column 'buy' (label of binary task 'cvr') must be 0 or 1; row 10 has 2" in text


def test_errors_in_a_named_file_say_which_file(tmp_path):
    write_text(tmp_path / "a.csv", rows(100))
    bad = rows(50)
    bad["click"][4] = 7
    write_text(tmp_path / "b.csv", bad)
    (tmp_path / "s.mtl").write_text('model m\ndata csv(train="a.csv", val="b.csv")\n' + MODEL)
    with pytest.raises(DataError, match=r"b.csv: column 'click' .* row 5 has 7"):
        prepare(check_file(tmp_path / "s.mtl").spec)


def test_the_cli_reports_a_data_error_with_exit_1_and_no_traceback(tmp_path):
    data = rows()
    data["age"][3] = "n/a?"
    write_text(tmp_path / "d.csv", data)
    (tmp_path / "s.mtl").write_text('model m\ndata csv("d.csv")\n' + MODEL)
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "compile", "s.mtl", "--train",
                          "--quiet", "--out", "runs"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "column 'age'" in out.stderr and "row 4" in out.stderr


# --------------------------------------------------------------------------
# Census-income, the real file, read by the shipped specs
# --------------------------------------------------------------------------

def test_census_specs_read_the_raw_file_and_train(tmp_path):
    checked = check_file(ROOT / "specs" / "census_mmoe.mtl").raise_for_errors()
    spec = checked.spec
    frame = load(spec)
    assert len(frame["age"]) == 99_762
    labels = encode_labels(spec, frame)
    assert labels["label:income"].mean() == pytest.approx(0.062, abs=0.001)
    assert labels["label:marital"].mean() == pytest.approx(0.433, abs=0.001)
    sample = {k: v[:12000] for k, v in frame.items()}
    result = train(spec, checked.graph, epochs=2, out_dir=tmp_path, progress=False,
                   frame=sample)
    assert result.test_metrics["income"]["auc"] > 0.8
    assert result.test_metrics["marital"]["auc"] > 0.9
