"""DUPN (Ni et al., KDD 2018): sequence encoders and attention pooling against a per-sample
reference of docs/architectures.md's equations (textbook LSTM and GRU cells, one row and one
step at a time), with the compiled model's own weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from mtl_dsl.api import check_text
from mtl_dsl.data.synthetic import funnel
from mtl_dsl.language import registry as reg
from mtl_dsl.language.size import model_size
from mtl_dsl.model.compiler import CompiledModel, compile_model

ROOT = Path(__file__).resolve().parent.parent
B, L, D = 6, 5, 4

SPEC = """
model seq
data synthetic.funnel(rows=100, history=5)
feature item = sparse(dim=4, vocab=30)
feature user = sparse(dim=3, vocab=20)
feature hist = sequence(share=item, column=history, max_len=5, {params})
feature d = dense(2)
label click
input x = concat(hist, d)
tower t = mlp(x, 3)
task ctr: binary(label=click) from t
"""


def compiled(params: str) -> CompiledModel:
    checked = check_text(SPEC.format(params=params)).raise_for_errors()
    torch.manual_seed(0)
    model = compile_model(checked.spec, checked.graph)
    with torch.no_grad():  # off the initialisation, so a wrong copy shows
        g = torch.Generator().manual_seed(5)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 30, (B, L), generator=g)
    lengths = [5, 3, 1, 0, 4, 2]  # row 3 has no history
    for i, n in enumerate(lengths):
        ids[i, n:] = -1
    return {"hist": ids, "item": torch.randint(0, 30, (B,), generator=g),
            "user": torch.randint(0, 20, (B,), generator=g), "d": torch.randn(B, 2, generator=g)}


def sig(v: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-v))


def lstm_states(rnn, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh); c = f c + i g; h = o tanh(c)."""
    h, c, out = torch.zeros(D), torch.zeros(D), []
    for x in xs:
        z = rnn.weight_ih_l0 @ x + rnn.bias_ih_l0 + rnn.weight_hh_l0 @ h + rnn.bias_hh_l0
        i, f, g, o = z[:D], z[D:2 * D], z[2 * D:3 * D], z[3 * D:]
        c = sig(f) * c + sig(i) * torch.tanh(g)
        h = sig(o) * torch.tanh(c)
        out.append(h)
    return out


def gru_states(rnn, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """r, z from W x + U h; n = tanh(W_n x + b_n + r (U_n h + b_hn)); h = (1 - z) n + z h."""
    h, out = torch.zeros(D), []
    for x in xs:
        a = rnn.weight_ih_l0 @ x + rnn.bias_ih_l0
        b = rnn.weight_hh_l0 @ h + rnn.bias_hh_l0
        r, z = sig(a[:D] + b[:D]), sig(a[D:2 * D] + b[D:2 * D])
        n = torch.tanh(a[2 * D:] + r * b[2 * D:])
        h = (1 - z) * n + z * h
        out.append(h)
    return out


def layer_norm(v: torch.Tensor, norm) -> torch.Tensor:
    """(v - mean) / sqrt(biased var + eps) * gamma + beta, for one vector."""
    mu, var = v.mean(), ((v - v.mean()) ** 2).mean()
    return (v - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def transformer_states(tf, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """z_t = x_t + P_t; position t attends to s <= t only (softmax(q_t.k_s / sqrt(d)));
    h = LN1(z_t + W_o a_t + b_o); out = LN2(h + W_2 relu(W_1 h + b_1) + b_2)."""
    w, b = tf.qkv.weight, tf.qkv.bias
    z = [x + tf.position[t] for t, x in enumerate(xs)]
    k = [w[D:2 * D] @ zs + b[D:2 * D] for zs in z]
    v = [w[2 * D:] @ zs + b[2 * D:] for zs in z]
    out = []
    for t in range(len(z)):
        q = w[:D] @ z[t] + b[:D]
        scores = [float(q @ k[s]) / math.sqrt(D) for s in range(t + 1)]
        m = max(scores)
        e = [math.exp(sc - m) for sc in scores]
        a = sum(ei / sum(e) * v[s] for s, ei in enumerate(e))
        h = layer_norm(z[t] + tf.out.weight @ a + tf.out.bias, tf.norm1)
        lin1, lin2 = tf.ff[0], tf.ff[2]
        f = lin2.weight @ torch.relu(lin1.weight @ h + lin1.bias) + lin2.bias
        out.append(layer_norm(h + f, tf.norm2))
    return out


def reference(model: CompiledModel, b: dict, encoder: str, pool: str,
              query: str | None) -> torch.Tensor:
    """One row at a time: the row's real ids embedded, the encoder's states h_1..h_n, then
    mean, sum, h_n (last) or a_t = softmax_t(v . tanh(W h_t + U q + b)) and sum_t a_t h_t."""
    emb = model.embeddings
    enc = emb.encoders["hist"] if "hist" in emb.encoders else None
    table = emb.rows("item")
    rows = []
    for i in range(B):
        xs = [table[j] for j in b["hist"][i].tolist() if j >= 0]
        if not xs:
            rows.append(torch.zeros(D))
            continue
        if encoder == "transformer":
            hs = transformer_states(enc.transformer, xs)
        else:
            hs = {"lstm": lstm_states, "gru": gru_states}[encoder](enc.rnn, xs) \
                if encoder != "none" else xs
        if pool == "attention":
            att = enc.attention
            q = emb.rows(query)[b[query][i]] if query else None
            scores = []
            for h in hs:
                z = att.state.weight @ h + att.state.bias
                if q is not None:
                    z = z + att.query.weight @ q
                scores.append(float(att.score.weight[0] @ torch.tanh(z)))
            m = max(scores)
            w = [math.exp(s - m) for s in scores]
            rows.append(sum(wi / sum(w) * h for wi, h in zip(w, hs)))
        elif pool == "last":
            rows.append(hs[-1])  # the last real id's state
        else:
            total = sum(hs)
            rows.append(total / len(hs) if pool == "mean" else total)
    return torch.stack(rows)


CASES = [("lstm", "attention", "item", "encoder=lstm, pool=attention(query=item, width=6)"),
         ("gru", "attention", "user", "encoder=gru, pool=attention(query=user, width=5)"),
         ("none", "attention", None, "pool=attention(width=7)"),
         ("gru", "mean", None, "encoder=gru, pool=mean"),
         ("lstm", "sum", None, "encoder=lstm, pool=sum"),
         ("none", "mean", None, "pool=mean"),
         ("transformer", "mean", None, "encoder=transformer, pool=mean"),
         ("transformer", "attention", "item",
          "encoder=transformer, pool=attention(query=item, width=6)"),
         ("transformer", "last", None, "encoder=transformer, pool=last"),
         ("lstm", "last", None, "encoder=lstm, pool=last"),
         ("none", "last", None, "pool=last")]


@pytest.mark.parametrize("encoder,pool,query,params", CASES, ids=[c[3] for c in CASES])
def test_sequence_encoder_matches_the_per_sample_reference(encoder, pool, query, params):
    model = compiled(params)
    b = batch()
    with torch.no_grad():
        got = model.trace(b)["hist"]
        want = reference(model, b, encoder, pool, query)
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not got[3].any()  # an empty history pools to zeros


def test_the_query_changes_the_attention() -> None:
    model = compiled("encoder=lstm, pool=attention(query=item)")
    b = batch()
    other = dict(b, item=(b["item"] + 7) % 30)
    with torch.no_grad():
        assert not torch.allclose(model.trace(b)["hist"], model.trace(other)["hist"])


@pytest.mark.parametrize("params", [p for *_, p in CASES])
def test_the_size_estimate_counts_the_encoder(params: str) -> None:
    checked = check_text(SPEC.format(params=params)).raise_for_errors()
    model = compile_model(checked.spec, checked.graph)
    assert model_size(checked.spec, checked.graph).params == model.param_count()
    assert sum(r["params"] for r in model.summary()) == model.param_count()


def test_a_query_that_is_not_a_sparse_feature_is_diagnosed() -> None:
    diags = check_text(SPEC.format(params="pool=attention(query=d)")).diagnostics
    assert [d.code for d in diags if d.severity == "error"] == ["E431"]
    diags = check_text(SPEC.format(params="pool=attention(query=itme)")).diagnostics
    assert any(d.code == "E431" and d.hint == "did you mean 'item'?" for d in diags)


def test_bad_encoder_and_pool_are_diagnosed() -> None:
    for params in ("encoder=rnn", "pool=max", "pool=attention(width=0)"):
        diags = check_text(SPEC.format(params=params)).diagnostics
        assert any(d.code == "E301" for d in diags), (params, diags)


def test_the_funnel_history_leaves_the_other_columns_unchanged() -> None:
    plain = funnel(reg.SyntheticFunnel(rows=300, seed=4))
    with_history = funnel(reg.SyntheticFunnel(rows=300, seed=4, history=6))
    assert set(with_history) - set(plain) == {"history"}
    for name, col in plain.items():
        assert (with_history[name] == col).all(), name
    lengths = [len(h.split("|")) for h in with_history["history"]]
    assert min(lengths) >= 1 and max(lengths) <= 6


def test_an_encoded_sequence_trains_from_a_streamed_parquet_folder(tmp_path: Path) -> None:
    """The streaming path (data/streaming.py) feeds encoded sequences like any other."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mtl_dsl.api import check_file
    from mtl_dsl.training.loop import train

    rng = np.random.default_rng(0)
    n = 1200
    item = rng.integers(0, 40, n)
    hist = [rng.integers(0, 40, rng.integers(0, 6)).tolist() for _ in range(n)]
    click = np.array([float(i in h) for i, h in zip(item, hist)])  # clicked: seen before
    table = pa.table({"item": item, "hist": pa.array(hist, pa.list_(pa.int64())),
                      "click": click})
    (tmp_path / "train").mkdir()
    for i in range(3):
        pq.write_table(table.slice(i * 300, 300), tmp_path / "train" / f"p{i}.parquet")
    pq.write_table(table.slice(900, 300), tmp_path / "val.parquet")
    (tmp_path / "s.mtl").write_text(
        'model s\ndata parquet(train="train", val="val.parquet", stream=true, buffer=200)\n'
        "feature item = sparse(dim=8)\n"
        "feature hist = sequence(share=item, max_len=5, encoder=gru, "
        "pool=attention(query=item, width=8))\n"
        "label click\ninput x = concat(hist, item)\ntower t = mlp(x, 8)\n"
        "task ctr: binary(label=click) from t\ntrain epochs=2 batch=100 lr=1e-2 seed=1\n")
    spec = check_file(tmp_path / "s.mtl").raise_for_errors().spec
    result = train(spec, out_dir=tmp_path / "runs", progress=False)
    first, last = result.history[0]["val"]["ctr"], result.history[-1]["val"]["ctr"]
    assert math.isfinite(last["loss"]) and last["loss"] < first["loss"]


def test_a_transformer_encoder_with_last_pooling_exports_and_predicts_the_same(tmp_path) -> None:
    """ONNX, torch.export and the ejected file predict what the checkpoint does."""
    from mtl_dsl.api import check_file
    from mtl_dsl.data.frames import load as load_data
    from mtl_dsl.tools.serving import artefacts, bundle as serving
    from mtl_dsl.tools.serving.export import export_run
    from mtl_dsl.tools.serving.predict import predictions
    from mtl_dsl.training.checkpoints import load_checkpoint
    from mtl_dsl.training.loop import train
    from test_export import _close, tiny_spec

    spec = tmp_path / "dupn.mtl"
    spec.write_text((ROOT / "specs" / "dupn.mtl").read_text().replace(
        "encoder=lstm", "encoder=transformer").replace(
        "pool=attention(query=item, width=32)", "pool=last"))
    checked = check_file(tiny_spec(spec, tmp_path)).raise_for_errors()
    torch.manual_seed(0)
    run = train(checked.spec, checked.graph, out_dir=tmp_path / "runs", progress=False)
    ck = load_checkpoint(run.checkpoint)
    frame = load_data(ck.spec)
    want = predictions(ck, frame)
    files = {s: export_run(ck, tmp_path / f"model{s}") for s in (".onnx", ".pt2", ".py")}
    _close(serving.onnx_predictions(files[".onnx"], frame, batch=97), want, 1e-5)
    _close(artefacts.frame_predictions(files[".pt2"], ck, frame, batch=101), want, 1e-5)
    _close(artefacts.frame_predictions(files[".py"], ck, frame), want, 1e-6)
