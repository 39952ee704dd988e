"""The data pipeline: a seeded split, encoders fitted on training rows only, data errors."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_dsl.data.encoders import Encoders, fit_vocab
from mtl_dsl.data.codecs import DenseCodec, Plan, SparseCodec, static_table_sizes
from mtl_dsl.data.statistics import Statistics, rank
from mtl_dsl.data.prepare import prepare
from mtl_dsl.language.diagnostics import DataError
from mtl_dsl.api import check_file

N = 400


def frame(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user": rng.choice(["u1", "u2", "u3", "u4"], size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(object),
        "item": rng.integers(0, 10, size=n),
        "shop": rng.integers(0, 5, size=n),
        "price": rng.gamma(2.0, 3.0, size=n),
        "age": rng.normal(40, 10, size=n),
        "count": rng.integers(0, 100, size=n).astype(np.float64),
        "click": rng.integers(0, 2, size=n).astype(np.float64),
        "stars": rng.integers(0, 3, size=n).astype(np.float64),
        "spend": rng.normal(size=n),
    }


BODY = """model shop
data csv("d.csv")
feature user = sparse(dim=4)
feature item = sparse(dim=4, share=user)
feature shop = sparse(vocab=5, dim=3)
feature price = dense(norm=log)
feature age = dense(norm=standard)
feature count = dense(norm=minmax)
input x = concat(user, item, shop, price, age, count)
label click, stars, spend
experts bottom = mlp(x, 8)
tower t_a = mlp(bottom, 4)
tower t_b = mlp(bottom, 4)
tower t_c = mlp(bottom, 4)
task ctr: binary(label=click) from t_a
task rating: multiclass(label=stars, classes=3) from t_b
task value: regression(label=spend) from t_c
train val=0.25 seed=3
"""


@pytest.fixture
def spec(tmp_path):
    f = frame()
    header = ",".join(f)
    rows = "\n".join(",".join(str(f[c][i]) for c in f) for i in range(N))
    (tmp_path / "d.csv").write_text(header + "\n" + rows + "\n")
    (tmp_path / "shop.mtl").write_text(BODY)
    return check_file(tmp_path / "shop.mtl").raise_for_errors().spec


def test_split_is_seeded_disjoint_and_stratified(spec):
    f = frame()
    p1, p2 = prepare(spec, f), prepare(spec, f)
    tr, va = p1.train.rows, p1.val.rows
    assert np.array_equal(va, p2.val.rows)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == N
    assert len(va) == pytest.approx(0.25 * N, abs=2)
    rate = lambda rows: f["click"][rows].mean()  # noqa: E731
    assert abs(rate(va) - rate(tr)) < 0.01  # stratified on the binary first task
    assert not np.array_equal(va, prepare(spec, f, seed=4).val.rows)


def test_reads_the_spec_source_and_encodes_tensors(spec):
    p = prepare(spec)  # the CSV written next to the spec, read by pyarrow
    t = p.train.tensors
    assert t["price"].dtype == torch.float32 and t["price"].shape == (len(p.train), 1)
    assert t["user"].dtype == torch.int64 and t["user"].shape == (len(p.train),)
    assert t["label:ctr"].dtype == torch.float32
    assert t["label:rating"].dtype == torch.int64
    assert p.encoders.vocab_sizes() == {"user": 1 + 4 + 10, "shop": 5}
    # the CSV round trip encodes exactly as the in-memory frame
    q = prepare(spec, frame())
    for k in t:
        assert torch.equal(t[k], q.train.tensors[k]), k


def test_auto_vocab_by_frequency_with_oov_zero(spec):
    p = prepare(spec, frame())
    v = p.encoders.vocabs["user"]
    f, tr = frame(), p.train.rows
    seen = np.concatenate([f["user"][tr].astype(str), f["item"][tr].astype(str)])
    counts = [int((seen == k).sum()) for k in v.keys]  # one table for user and item
    assert counts == sorted(counts, reverse=True) and v.keys[0] == "u1"
    ids = v.encode(np.array(["u1", "u4", "never-seen", None], dtype=object), "user")
    assert ids.tolist() == [1, 4, 0, 0]
    # 7, 7.0 and "7" are one category
    assert len(set(v.encode(np.array([7, 7.0, "7"], dtype=object), "item"))) == 1


def test_min_count_drops_rare_values():
    v = fit_vocab([np.array(["a"] * 5 + ["b"] * 2 + ["c"])], min_count=2)
    assert v.keys == ["a", "b"] and v.size == 3
    assert v.encode(np.array(["c", "a"]), "x").tolist() == [0, 1]


def test_statistics_are_fitted_on_training_rows_only(spec):
    f = frame()
    p = prepare(spec, f)
    va = p.val.rows
    # Poison every validation row: if they leaked into fitting, everything below changes.
    g = {k: v.copy() for k, v in f.items()}
    g["age"][va] = 1e6
    g["count"][va] = 1e6
    g["price"][va] = 1e6
    g["user"][va] = "only-in-validation"
    q = prepare(spec, g)
    assert np.array_equal(q.val.rows, va)
    for name in ("age", "count", "price"):
        assert q.encoders.scalers[name] == p.encoders.scalers[name], name
    assert q.encoders.vocabs["user"].keys == p.encoders.vocabs["user"].keys
    assert (q.val.tensors["user"] == 0).all()  # unseen -> out of vocabulary
    tr = p.train.rows
    age = p.encoders.scalers["age"]
    assert age.shift == [pytest.approx(f["age"][tr].mean())]
    assert age.scale == [pytest.approx(f["age"][tr].std())]
    cnt = p.train.tensors["count"]
    assert cnt.min() == 0.0 and cnt.max() == 1.0  # minmax of the training rows
    price = p.train.tensors["price"]
    assert abs(float(price.mean())) < 1e-5 and float(price.std()) == pytest.approx(1, abs=1e-2)


def test_encoders_round_trip_through_json_and_pickle(spec):
    p = prepare(spec, frame())
    d = json.loads(json.dumps(p.encoders.as_dict()))
    for e in (Encoders.from_dict(d), pickle.loads(pickle.dumps(p.encoders))):
        again = e.encode(frame())
        for k, v in p.encoders.encode(frame()).items():
            assert np.array_equal(v, again[k]), k


def test_batches_are_slices_of_one_permutation(spec):
    p = prepare(spec, frame())
    gen = torch.Generator().manual_seed(0)
    batches = list(p.train.batches(64, gen))
    assert [len(b["age"]) for b in batches[:-1]] == [64] * (len(batches) - 1)
    seen = torch.cat([b["age"][:, 0] for b in batches])
    assert torch.equal(seen.sort().values, p.train.tensors["age"][:, 0].sort().values)
    assert not torch.equal(seen, p.train.tensors["age"][:, 0])


def _error(spec, **changes) -> str:
    f = frame()
    for k, v in changes.items():
        if v is None:
            del f[k]
        else:
            f[k] = v
    with pytest.raises(DataError) as err:
        prepare(spec, f)
    return str(err.value)


def test_binary_label_must_be_zero_or_one(spec):
    y = frame()["click"].copy()
    y[17] = 2
    msg = _error(spec, click=y)
    assert "'click'" in msg and "row 18" in msg and "0 or 1" in msg and "has 2" in msg


def test_nan_label_is_an_error(spec):
    y = frame()["spend"].copy()
    y[[5, 9]] = np.nan
    msg = _error(spec, spend=y)
    assert "'spend'" in msg and "2 missing" in msg and "row 6" in msg


def test_multiclass_label_in_range(spec):
    y = frame()["stars"].copy()
    y[3] = 3
    msg = _error(spec, stars=y)
    assert "'stars'" in msg and "row 4" in msg and "0..2" in msg


def test_nan_in_dense_column(spec):
    x = frame()["age"].copy()
    x[[40, 50]] = np.nan
    msg = _error(spec, age=x)
    assert "'age'" in msg and "row 41" in msg and "2 missing" in msg


def test_text_in_dense_column(spec):
    x = frame()["age"].astype(object)
    x[7] = "forty"
    msg = _error(spec, age=x)
    assert "'age'" in msg and "row 8" in msg and "'forty'" in msg


def test_negative_value_with_log_norm(spec):
    x = frame()["price"].copy()
    x[11] = -1.0
    msg = _error(spec, price=x)
    assert "'price'" in msg and "row 12" in msg and "non-negative" in msg


def test_missing_column(spec):
    msg = _error(spec, age=None)
    assert "'age'" in msg and "feature 'age'" in msg
    msg = _error(spec, stars=None)
    assert "'stars'" in msg and "task 'rating'" in msg


def test_fixed_vocab_id_out_of_range(spec):
    x = frame()["shop"].copy()
    x[33] = 5  # vocab=5: ids 0..4
    msg = _error(spec, shop=x)
    assert "'shop'" in msg and "row 34" in msg and "[0, 5)" in msg
    x = frame()["shop"].astype(np.float64)
    x[2] = 1.5
    assert "row 3" in _error(spec, shop=x)


def test_too_few_rows(spec):
    with pytest.raises(DataError, match="1 row"):
        prepare(spec, {k: v[:1] for k, v in frame().items()})


# --------------------------------------------------------------------------
# The encoding plan: one description, fed in one chunk or many
# --------------------------------------------------------------------------

def test_the_plan_comes_from_the_spec_alone(spec):
    plan = Plan.from_spec(spec)
    kinds = {c.name: type(c) for c in plan.codecs}
    assert kinds == {"user": SparseCodec, "item": SparseCodec, "shop": SparseCodec,
                     "price": DenseCodec, "age": DenseCodec, "count": DenseCodec}
    assert {c.name: c.table for c in plan.codecs if not isinstance(c, DenseCodec)} == \
        {"user": "user", "item": "user", "shop": "shop"}  # item shares user's table
    tables = {t.name: (t.kind, t.rows) for t in plan.tables}
    assert tables == {"user": ("auto", None), "shop": ("fixed", 5)}
    assert static_table_sizes(spec) is None  # user's vocabulary comes from the data
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.codecs[0].column = "other"


def test_ranking_is_by_count_then_key():
    assert rank({"b": 2, "a": 2, "c": 3, "d": 1}, min_count=2) == ["c", "a", "b"]


def test_chunks_fit_what_one_chunk_fits(spec):
    f = frame()
    f["age"][[3, 70, 250]] = np.nan
    spec = spec.model_copy(update={"features": tuple(
        x.model_copy(update={"params": x.params.model_copy(update={"missing": "mean"})})
        if x.name == "age" else x for x in spec.features)})
    rows = np.arange(0, N, 3)
    whole = Encoders.fit(spec, f, rows)
    stats = Statistics(Plan.from_spec(spec))
    for lo, hi in ((0, 1), (1, 90), (90, 91), (91, 250), (250, N)):  # uneven, one of 0 rows
        chunk = {k: v[lo:hi] for k, v in f.items()}
        stats.add(chunk, np.flatnonzero(np.isin(np.arange(lo, hi), rows)))
    chunked = Encoders.from_statistics(stats)
    assert chunked.vocabs == whole.vocabs
    assert chunked.scalers["age"].fill == pytest.approx(whole.scalers["age"].fill, rel=1e-12)
    for name in ("price", "age", "count"):
        a, b = chunked.scalers[name], whole.scalers[name]
        assert (a.norm, a.missing) == (b.norm, b.missing)
        np.testing.assert_allclose(a.shift, b.shift, rtol=1e-12)
        np.testing.assert_allclose(a.scale, b.scale, rtol=1e-12)
    age = whole.scalers["age"]
    train_age = f["age"][rows]
    filled = np.where(np.isnan(train_age), np.nanmean(train_age), train_age)
    assert age.shift == [pytest.approx(filled.mean())]
    assert age.scale == [pytest.approx(filled.std())]


def test_encoders_survive_a_weights_only_checkpoint(spec):
    p = prepare(spec, frame())
    buf = io.BytesIO()
    torch.save({"encoders": p.encoders.as_dict()}, buf)
    buf.seek(0)
    stored = torch.load(buf, weights_only=True)["encoders"]
    again = Encoders.from_dict(stored)
    assert again.as_dict() == p.encoders.as_dict()
    assert again.codecs == p.encoders.codecs
    for k, v in p.encoders.encode(frame()).items():
        assert np.array_equal(v, again.encode(frame())[k]), k


def test_data_modules_import_only_the_language_and_each_other_without_cycles():
    folder = Path(__file__).resolve().parents[1] / "mtl_dsl" / "data"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                top = (node.module or "").split(".")[0]
                if node.level == 2:
                    assert top == "language", f"{path.name} imports ..{node.module}"
                elif top:
                    deps.add(top)
                else:
                    deps |= {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("mtl_dsl") for a in node.names), path.name
        graph[path.stem] = deps
    state: dict[str, int] = {}

    def visit(m: str, trail: tuple[str, ...]) -> None:
        assert state.get(m) != 1, f"import cycle: {' -> '.join(trail + (m,))}"
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in graph.get(m, ()):
            visit(d, trail + (m,))
        state[m] = 2

    for m in graph:
        visit(m, ())
    assert "dataset" not in graph


# --------------------------------------------------------------------------- hashing


HASHED = BODY.replace("feature user = sparse(dim=4)", "feature user = sparse(hash=3, dim=4)")


def hashed_spec(tmp_path, user: str):
    """BODY with its user table as `user`, on the same CSV (user shared by item)."""
    f = frame()
    (tmp_path / "d.csv").write_text(",".join(f) + "\n" + "\n".join(
        ",".join(str(f[c][i]) for c in f) for i in range(N)) + "\n")
    (tmp_path / "h.mtl").write_text(BODY.replace("feature user = sparse(dim=4)",
                                                 f"feature user = {user}"))
    return check_file(tmp_path / "h.mtl").raise_for_errors().spec


def test_hash_collisions_are_measured_on_the_training_values(tmp_path):
    """hash=3: the table's training values (u1..u4 and the items 0..9, one table) in 3
    buckets; the report counts the values that share a bucket, against brute force."""
    from mtl_dsl.data.encoding import hash_ids

    p = prepare(hashed_spec(tmp_path, "sparse(hash=3, dim=4)"), frame())
    c = p.encoders.hashing()["user"]
    f, tr = frame(), p.train.rows
    seen = sorted(set(f["user"][tr].astype(str)) | set(f["item"][tr].astype(str)))
    buckets = hash_ids(seen, 4).tolist()
    colliding = sum(buckets.count(b) > 1 for b in buckets)
    assert c["values"] == len(seen) == 14 and c["buckets"] == 3
    assert c["colliding"] == colliding and c["rate"] == pytest.approx(colliding / 14)
    assert 0 < c["rows_rate"] <= 1


def test_min_count_and_max_ids_cut_hashed_and_ranked_tables_alike(tmp_path):
    """The `max_ids` most frequent values seen at least `min_count` times are kept, in a
    hashed table (hashed to their buckets) as in a ranked one (ids by frequency); the rest,
    and values never seen, map to 0, also through the stored encoders (as predict and the
    ONNX bundle read them)."""
    f = frame()
    for user, rows in (("sparse(hash=1000, dim=4, min_count=50, max_ids=3)", 1001),
                       ("sparse(dim=4, min_count=50, max_ids=3)", 4)):
        p = prepare(hashed_spec(tmp_path, user), f)
        vocab = p.encoders.vocabs["user"]
        counts = {k: int((np.concatenate([f["user"][p.train.rows].astype(str),
                                          f["item"][p.train.rows].astype(str)]) == k).sum())
                  for k in ["u1", "u2", "u3", "u4"] + [str(i) for i in range(10)]}
        kept = rank(counts, 50, 3)
        assert vocab.keys == kept and len(kept) == 3 and vocab.size == rows
        probe = np.array([*kept, "u4", "never-seen"], dtype=object)
        ids = vocab.encode(probe, "user").tolist()
        assert ids[-2:] == [0, 0] and 0 not in ids[:3] and len(set(ids[:3])) == 3
        stored = Encoders.from_dict(json.loads(json.dumps(p.encoders.as_dict())))
        assert stored.vocabs["user"].encode(probe, "user").tolist() == ids


def test_an_unseen_value_of_a_plain_hashed_table_lands_in_its_bucket(tmp_path):
    """Without min_count/max_ids a hashed table keeps no values: a value never seen in
    training gets 1 + crc32 mod N like any other (a row that may be trained for another
    value, or never trained); a missing one gets 0."""
    import zlib

    p = prepare(hashed_spec(tmp_path, "sparse(hash=7, dim=4)"), frame())
    vocab = p.encoders.vocabs["user"]
    assert not vocab.limited and vocab.keys == []
    ids = vocab.encode(np.array(["never-seen", None], dtype=object), "user").tolist()
    assert ids == [1 + zlib.crc32(b"never-seen") % 7, 0]


def test_min_count_on_fixed_ids_is_refused_at_its_line(tmp_path):
    from mtl_dsl.api import check_text

    checked = check_text(BODY.replace("sparse(vocab=5, dim=3)",
                                      "sparse(vocab=5, dim=3, max_ids=2)"), "b.mtl")
    d = next(d for d in checked.diagnostics if d.code == "E301")  # (E502: no d.csv here)
    assert "need vocab=auto or hash=N" in d.message and d.span.line == 5
