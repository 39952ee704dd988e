"""Gates: DSelect-k against a per-sample reference of the paper's equations, the noisy top-k
gate, the noise option, the balance and selector losses, and the E430 checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.testing import assert_close

from mtl_dsl.api import check_text
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.model.gates import (RKEY, WKEY, DSelectGate, SoftmaxGate, importance_loss,
                                 selector_loss, smooth_step, softmax_gates)

SPEC = """model m
data synthetic.correlated(rows=100, dim=6)
feature x = dense(6)
label y1, y2
experts e[{n}] = mlp(x, 4)
gate g_a = {gate_a} over e
gate g_b = {gate_b} over e
tower t_a = mlp(g_a, 3)
tower t_b = mlp(g_b, 3)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""


def compiled(n: int = 8, gate_a: str = "dselect(x, k=2)", gate_b: str = "softmax(x)"):
    checked = check_text(SPEC.format(n=n, gate_a=gate_a, gate_b=gate_b)).raise_for_errors()
    torch.manual_seed(0)
    return compile_model(checked.spec, checked.graph)


def batch(rows: int = 16, dim: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"x": torch.randn(rows, dim, generator=g)}


# --------------------------------------------------------------------------
# DSelect-k: the paper's equations, one row, one selector, one bit at a time
# --------------------------------------------------------------------------

def reference_smooth_step(t: float, gamma: float) -> float:
    if t <= -gamma / 2:
        return 0.0
    if t >= gamma / 2:
        return 1.0
    return -2 * t ** 3 / gamma ** 3 + 3 * t / (2 * gamma) + 0.5


def reference_dselect(x: list[float], Z, c, A, a, n: int, k: int, gamma: float) -> list[float]:
    """q(x) = sum_i softmax(A x + a)_i r(S(Z_i x + c_i)); r_j the product over the bits of
    j's code (most significant first) of S or 1 - S."""
    m = max(1, math.ceil(math.log2(n)))
    dot = lambda row, bias: sum(w * v for w, v in zip(row, x)) + bias  # noqa: E731
    logits = [dot(A[i], a[i]) for i in range(k)]
    top = max(logits)
    alpha = [math.exp(v - top) for v in logits]
    alpha = [v / sum(alpha) for v in alpha]
    q = [0.0] * n
    for i in range(k):
        s = [reference_smooth_step(dot(Z[i * m + l], c[i * m + l]), gamma) for l in range(m)]
        for j in range(n):
            r = 1.0
            for l in range(m):
                bit = (j >> (m - 1 - l)) & 1
                r *= s[l] if bit else 1 - s[l]
            q[j] += alpha[i] * r
    return q


@pytest.mark.parametrize("n,k,gamma", [(8, 2, 1.0), (5, 3, 0.5), (2, 1, 2.0)])
def test_dselect_matches_the_per_sample_reference(n, k, gamma):
    model = compiled(n, f"dselect(x, k={k}, gamma={gamma})")
    gate: DSelectGate = model.gates["g_a"]
    with torch.no_grad():  # off the near-zero init, so smooth steps land in all three pieces
        gate.z.weight.normal_(0, 0.6)
        gate.z.bias.normal_(0, 0.3)
        gate.w.weight.normal_(0, 0.5)
    x = batch()["x"]
    env = model.trace({"x": x})
    Z, c = gate.z.weight.tolist(), gate.z.bias.tolist()
    A, a = gate.w.weight.tolist(), gate.w.bias.tolist()
    want = torch.tensor([reference_dselect(row, Z, c, A, a, n, k, gamma) for row in x.tolist()])
    assert_close(env[WKEY + "g_a"], want, atol=1e-5, rtol=1e-5)
    s = smooth_step(gate.z(x), gamma)
    assert (s == 0).any() and (s == 1).any() and ((s > 0) & (s < 1)).any()
    experts = env["e"]  # (B, n, D): the gate's output is its weights' mix of them
    assert_close(env["g_a"], (want.unsqueeze(-1) * experts).sum(1), atol=1e-5, rtol=1e-5)


def test_smooth_step_is_continuous_at_the_band_edges():
    gamma = 0.8
    t = torch.tensor([-0.4 - 1e-6, -0.4 + 1e-6, 0.4 - 1e-6, 0.4 + 1e-6])
    s = smooth_step(t, gamma)
    assert_close(s, torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-5, rtol=0)


def test_dselect_weights_sum_to_one_for_a_power_of_two():
    model = compiled(8, "dselect(x, k=3)")
    w = model.trace(batch())[WKEY + "g_a"]
    assert_close(w.sum(-1), torch.ones(w.shape[0]))


def test_the_selector_loss_is_the_entropy_and_the_lost_mass():
    r = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])  # (B=1, k=2, n=3)
    h = -(0.5 * math.log(0.5 + 1e-6)) * 2 - math.log(1 + 1e-6)
    assert_close(selector_loss(r, 2.0, True), torch.tensor(2.0 * h))
    lost = torch.tensor([[[0.25, 0.25, 0.0]]])  # mass 0.5 on codes with no expert
    assert_close(selector_loss(lost, 0.0, False), torch.tensor(1.0))


def test_dselect_aux_loss_is_named_kept_and_trains():
    model = compiled(5, "dselect(x, k=2, entropy=0.1)", "softmax(x, balance=0.5)")
    assert model.aux_loss_names() == ["select:g_a", "balance:g_b"]  # spec order
    assert set(model.aux_keeps()) == {WKEY + "g_b", RKEY + "g_a"}
    out, kept = model.forward_keeping(batch(), model.aux_keeps())
    aux = model.aux_losses(out, kept)
    want = 0.5 * importance_loss(kept[WKEY + "g_b"]).item()
    assert aux["balance:g_b"].item() == pytest.approx(want)
    sum(aux.values()).backward()
    assert model.gates["g_a"].z.weight.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="aux_keeps"):
        model.aux_losses(out)


# --------------------------------------------------------------------------
# Softmax options: noise, noisy top-k, balance
# --------------------------------------------------------------------------

def test_importance_loss_is_the_squared_coefficient_of_variation():
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # importance (2, 0): mean 1, variance 1
    assert float(importance_loss(w)) == pytest.approx(1.0)
    assert float(importance_loss(torch.full((4, 3), 1 / 3))) == pytest.approx(0.0, abs=1e-9)


def test_top_k_keeps_k_experts_and_draws_no_noise_in_eval():
    model = compiled(6, "softmax(x, top_k=2)", "softmax(x, top_k=2)")
    x = batch()
    model.eval()
    w1, w2 = (model.trace(x)[WKEY + "g_a"] for _ in range(2))
    assert torch.equal(w1, w2)
    assert ((w1 > 0).sum(-1) == 2).all()
    gate: SoftmaxGate = model.gates["g_a"]
    logits = gate.proj(x["x"])
    top = logits.topk(2, -1)
    want = torch.zeros_like(logits).scatter(-1, top.indices, top.values.softmax(-1))
    assert_close(w1, want)


def test_top_k_noise_is_learnt_and_only_while_training():
    model = compiled(6, "softmax(x, top_k=1)")
    gate: SoftmaxGate = model.gates["g_a"]
    assert gate.noise_proj is not None and not gate.noise_proj.weight.detach().any()
    model.train()
    torch.manual_seed(3)
    picks = torch.stack([model.trace(batch())[WKEY + "g_a"].argmax(-1) for _ in range(20)])
    assert (picks != picks[0]).any()  # the noise moves rows between experts
    w = gate(batch()["x"])
    w.max(-1).values.sum().backward()
    assert gate.noise_proj.weight.grad is not None


def test_noise_only_in_training_and_fusing_does_not_change_a_gate():
    model = compiled(4, "softmax(x, noise=1.0, temperature=2)", "softmax(x)")
    x = batch()["x"]
    gates = [model.gates["g_a"], model.gates["g_b"]]
    model.eval()
    fused = softmax_gates(gates, x)
    assert_close(fused[:, 0], gates[0](x))
    assert_close(fused[:, 1], gates[1](x))
    model.train()
    torch.manual_seed(0)
    noisy = softmax_gates(gates, x)
    assert not torch.allclose(noisy[:, 0], fused[:, 0])
    assert_close(noisy[:, 1], fused[:, 1])  # the plain gate is untouched


# --------------------------------------------------------------------------
# The language: E430, the size estimate
# --------------------------------------------------------------------------

@pytest.mark.parametrize("gate,message", [
    ("softmax(x, top_k=5)", "selects 5 experts but mixes only 4"),
    ("dselect(x, k=6)", "selects 6 experts but mixes only 4")])
def test_a_gate_cannot_select_more_experts_than_it_mixes(gate, message):
    checked = check_text(SPEC.format(n=4, gate_a=gate, gate_b="softmax(x)"))
    assert [d.code for d in checked.diagnostics if d.severity == "error"] == ["E430"]
    assert message in checked.diagnostics[0].message


@pytest.mark.parametrize("gate_a", ["dselect(x, k=3, gamma=0.5)", "softmax(x, top_k=2)",
                                    "dselect(x, k=1)"])
def test_the_size_estimate_counts_the_new_gates(gate_a):
    checked = check_text(SPEC.format(n=5, gate_a=gate_a, gate_b="softmax(x)"))
    model = compile_model(checked.spec, checked.graph)
    assert checked.size.params == model.param_count()


# --------------------------------------------------------------------------
# bench/synthetic.py end to end, tiny
# --------------------------------------------------------------------------

def test_the_synthetic_benchmark_runs_end_to_end(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--rows", "200", "--test", "50", "--seeds", "1", "--steps", "4",
                           "--batch", "100", "--correlations", "0.5",
                           "--models", "shared_bottom,dselect", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["model"], r["seed"]) for r in runs] == [("shared_bottom", 1), ("dselect", 1)]
    assert all(math.isfinite(r["test_mse"]) and r["test_mse"] > 0 for r in runs)
    assert runs[0]["epochs"] == 2  # 4 steps of 100 over 200 rows
    table = (tmp_path / "table.md").read_text()
    assert "| dselect |" in table and "corr 0.5" in table
    assert (tmp_path / "loss_vs_correlation.png").stat().st_size > 1000
    assert "runs worse than 1.5x" in capsys.readouterr().out


def test_the_synthetic_benchmark_sets_every_layer_s_activation_and_the_schedule(tmp_path):
    import importlib.util
    from pathlib import Path

    from mtl_dsl.api import check_text

    path = Path(__file__).resolve().parents[1] / "bench" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for model, layers in (("shared_bottom", 3), ("omoe", 3), ("mmoe", 3)):
        text = bench.spec_text(model, 2, 3, 3e-3, act="leaky_relu",
                               train="schedule=cosine warmup=500")
        assert text.count("act=leaky_relu") == layers  # bottom or experts, and both towers
        checked = check_text(text).raise_for_errors()
        assert checked.spec.train.params.schedule == "cosine"
        assert checked.spec.train.params.warmup == 500
    assert "act=" not in bench.spec_text("mmoe", 1, 3, 1e-3)  # relu: the default, unwritten
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--rows", "200", "--test", "50", "--seed-list", "3", "--steps", "4",
                           "--batch", "100", "--correlations", "0.9", "--models", "omoe",
                           "--act", "gelu", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["model"], r["seed"], r["correlation"]) for r in runs] == [("omoe", 3, 0.9)]
