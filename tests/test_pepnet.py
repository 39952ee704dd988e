"""PEPNet (Chang et al., KDD 2023): EPNet and PPNet gates against a per-sample reference of
docs/architectures.md's equations, with the compiled model's own weights."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from mtl_dsl.api import check_text
from mtl_dsl.language.size import model_size
from mtl_dsl.model.compiler import CompiledModel, compile_model

B = 7
SPEC = """
model pep
data synthetic.correlated(rows=100, dim=9)
feature x = dense(6)
feature p = dense(3, column=x, start=6)
label y1, y2
tower ep = pepnet(x, by=p, gamma=2)
tower t_a = pepnet(ep, 5, 4, by=p, gamma={gamma}{extra})
tower t_b = mlp(ep, 3)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""


def compiled(gamma: float = 2.0, extra: str = "") -> CompiledModel:
    checked = check_text(SPEC.format(gamma=gamma, extra=extra)).raise_for_errors()
    torch.manual_seed(0)
    model = compile_model(checked.spec, checked.graph)
    with torch.no_grad():
        g = torch.Generator().manual_seed(9)
        for q in model.parameters():
            q.add_(0.3 * torch.randn(q.shape, generator=g))
    return model.eval()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"x": torch.randn(B, 6, generator=g), "p": torch.randn(B, 3, generator=g)}


def gate_nu(gate, z: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma * sigmoid(W2 relu(W1 z + b1) + b2), one row."""
    hidden = torch.relu(gate.hidden.weight @ z + gate.hidden.bias)
    return gamma / (1 + torch.exp(-(gate.out.weight @ hidden + gate.out.bias)))


def reference(model: CompiledModel, b: dict, gamma: float) -> torch.Tensor:
    """Row by row: e = x * GateNU_0([p ; x]); h_l = relu(W_l h_(l-1) + b_l) * GateNU_l([p ; e])."""
    ep, tower = model.towers["ep"], model.towers["t_a"]
    rows = []
    for i in range(B):
        x, p = b["x"][i], b["p"][i]
        e = x * gate_nu(ep.gates[0], torch.cat([p, x]), 2.0)
        h = e
        for lin, gate in zip(tower.mlp.linears, tower.gates):
            h = torch.relu(lin.weight @ h + lin.bias) * gate_nu(gate, torch.cat([p, e]), gamma)
        rows.append(h)
    return torch.stack(rows)


def test_pepnet_matches_the_per_sample_reference() -> None:
    for gamma in (2.0, 1.5):
        model = compiled(gamma)
        b = batch()
        with torch.no_grad():
            assert_close(model.trace(b)["t_a"], reference(model, b, gamma))


def test_the_gates_read_a_stopped_gradient_of_the_input() -> None:
    """Through the gates, the loss reaches the prior but never the gated input's producer:
    with the scaling removed, the EPNet output would get no gradient from t_a's gates."""
    model = compiled()
    b = batch()
    b["x"].requires_grad_(True)
    env = model.trace(b)
    ep = env["ep"]
    grad = torch.autograd.grad(env["t_a"].sum(), ep, retain_graph=True)[0]
    # the same gradient computed with the gate inputs' x part treated as a constant
    tower = model.towers["t_a"]
    e = ep.detach().requires_grad_(True)
    z = torch.cat([b["p"], ep.detach()], 1)
    h = e
    for (lo, hi), gate in zip(tower.chunks, tower.gates):
        h = tower.mlp.net[lo:hi](h) * gate(z)
    assert_close(grad, torch.autograd.grad(h.sum(), e)[0])


def test_the_size_estimate_counts_the_gates() -> None:
    for extra in ("", ", norm=layer, dropout=0.1"):
        checked = check_text(SPEC.format(gamma=2, extra=extra)).raise_for_errors()
        model = compile_model(checked.spec, checked.graph)
        assert model_size(checked.spec, checked.graph).params == model.param_count()


def test_a_prior_that_is_not_a_representation_is_diagnosed() -> None:
    text = SPEC.format(gamma=2, extra="").replace("by=p, gamma=2)\ntower t_a", "by=a, gamma=2)"
                                                  "\ntower t_a")
    assert "E432" in [d.code for d in check_text(text).diagnostics]
    text = SPEC.format(gamma=2, extra="").replace("tower t_b = mlp(ep, 3)",
                                                  "experts t_b = pepnet(ep, 3, by=p)")
    assert "E432" in [d.code for d in check_text(text).diagnostics]
    bad = check_text(SPEC.format(gamma=0, extra="")).diagnostics
    assert any(d.code == "E301" and "gamma" in d.message for d in bad)
