"""Streaming a Parquet folder through a shuffle buffer: the same epoch as loading it whole,
with bounded memory, and training runs on it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mtl_dsl.data.prepare import prepare
from mtl_dsl.data.splits import assign
from mtl_dsl.data.streaming import StreamSet
from mtl_dsl.api import check_file
from mtl_dsl.training.loop import train

N, FILES = 3000, 4
MODEL = """
feature rid = sparse(vocab=3000, dim=2)
feature city = sparse(dim=4)
feature age = dense(norm=standard, missing=mean)
feature spend = dense(norm=log)
label click, buy
input x = concat(rid, city, age, spend)
experts bottom = mlp(x, 8)
tower t1 = mlp(bottom, 4)
tower t2 = mlp(bottom, 4)
task ctr: binary(label=click) from t1
task cvr: binary(label=buy) from t2
train epochs=1 batch=100 seed=2
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(1)
    age = rng.normal(40, 10, N)
    age[::50] = np.nan
    click = (rng.random(N) < 0.3).astype(np.int64)
    table = pa.table({"rid": np.arange(N), "city": rng.choice(["a", "b", "c", "d"], N),
                      "age": age, "spend": rng.gamma(2, 3, N), "click": click,
                      "buy": click & (rng.random(N) < 0.5)})
    (out / "train").mkdir()
    for i in range(FILES):
        pq.write_table(table.slice(i * N // FILES, N // FILES), out / "train" / f"p{i}.parquet")
    pq.write_table(table.slice(0, 300), out / "val.parquet")
    return out


def spec(folder, data: str):
    (folder / "s.mtl").write_text(f"model m\n{data}\n{MODEL}")
    return check_file(folder / "s.mtl").raise_for_errors().spec


def epoch_ids(data, batch: int = 100, seed: int = 0) -> tuple[list[int], list[torch.Tensor]]:
    batches = list(data.batches(batch, torch.Generator().manual_seed(seed)))
    return torch.cat([b["rid"] for b in batches]).tolist(), batches


def test_streaming_a_folder_sees_the_same_rows_as_loading_it_whole(folder):
    whole = prepare(spec(folder, 'data parquet(train="train", val="val.parquet")'))
    streamed = prepare(spec(folder, 'data parquet(train="train", val="val.parquet", '
                                       'stream=true, buffer=256)'))
    assert isinstance(streamed.train, StreamSet) and len(streamed.train) == N
    ids, batches = epoch_ids(streamed.train)
    whole_ids, _ = epoch_ids(whole.train)
    assert sorted(ids) == sorted(whole_ids) == list(range(N))  # every row once
    assert ids != sorted(ids)  # shuffled
    assert [len(b["rid"]) for b in batches] == [100] * 30
    assert set(batches[0]) == set(whole.train.tensors)  # same keys, dtypes, shapes
    for k, v in whole.train.tensors.items():
        assert batches[0][k].dtype == v.dtype and batches[0][k].shape[1:] == v.shape[1:]
    # the encoders are those of the whole training data, and so is every encoded row
    assert streamed.encoders.vocabs["city"].keys == whole.encoders.vocabs["city"].keys
    for name in ("age", "spend"):
        a, b = streamed.encoders.scalers[name], whole.encoders.scalers[name]
        assert (a.norm, a.missing) == (b.norm, b.missing)
        np.testing.assert_allclose(a.shift, b.shift, rtol=1e-9)
        np.testing.assert_allclose(a.scale, b.scale, rtol=1e-9)
        assert (a.fill is None) == (b.fill is None)
        if a.fill is not None:
            np.testing.assert_allclose(a.fill, b.fill, rtol=1e-9)
    order = torch.tensor(ids).argsort()
    got = torch.cat([b["age"] for b in batches])[order]
    torch.testing.assert_close(got, whole.train.tensors["age"])  # rid = row position
    torch.testing.assert_close(streamed.val.tensors["age"], whole.val.tensors["age"])


def test_the_shuffle_buffer_bounds_memory(folder):
    streamed = prepare(spec(folder, 'data parquet(train="train", val="val.parquet", '
                                       'stream=true, buffer=200)'))
    streamed.train.read_rows = 128
    epoch_ids(streamed.train)
    assert 200 <= streamed.train.peak_rows <= 200 + 100 + 128  # buffer + batch + one read
    # two epochs see the rows in different orders, each row once
    first, _ = epoch_ids(streamed.train, seed=0)
    second, _ = epoch_ids(streamed.train, seed=1)
    assert first != second and sorted(first) == sorted(second)


def test_a_streamed_single_path_is_split_per_row_by_a_seeded_hash(folder):
    s = spec(folder, 'data parquet("train", split=[0.7, 0.2, 0.1], stream=true, buffer=500)')
    p = prepare(s)
    ids, _ = epoch_ids(p.train)
    part = assign(s.train.params.seed, np.arange(N), 0.2, 0.1)
    assert sorted(ids) == np.flatnonzero(part == 0).tolist()
    assert p.val.tensors["rid"].tolist() == np.flatnonzero(part == 1).tolist()
    assert p.test.tensors["rid"].tolist() == np.flatnonzero(part == 2).tolist()
    assert len(p.val) == pytest.approx(0.2 * N, abs=60)


def test_training_streams_the_data(folder, tmp_path):
    s = spec(folder, 'data parquet(train="train", val="val.parquet", stream=true, buffer=500)')
    result = train(s, epochs=2, out_dir=tmp_path, progress=False)
    assert result.best_epoch >= 1
    assert result.history[-1]["val"]["ctr"]["loss"] == result.history[-1]["val"]["ctr"]["loss"]
