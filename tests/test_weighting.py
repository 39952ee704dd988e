"""Loss weighting: UWL follows its formula and learns the loss scales; GradNorm balances."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtl_dsl.training.groups import ParamGroups
from mtl_dsl.training.weighting.losses import GradNorm, Uncertainty
from mtl_dsl.training.weighting.base import Weighting


def test_fixed_is_the_weighted_sum():
    w = Weighting({"a": 2.0, "b": 0.5})
    total = w.step({"a": torch.tensor(3.0), "b": torch.tensor(4.0)})
    assert float(total) == pytest.approx(2 * 3 + 0.5 * 4)
    assert w.parameters() == [] and w.weights() == {"a": 2.0, "b": 0.5}


def test_uncertainty_total_is_the_formula():
    u = Uncertainty(["a", "b"])
    with torch.no_grad():
        u.log_var.copy_(torch.tensor([0.3, -1.2]))
    L = {"a": torch.tensor(2.0), "b": torch.tensor(0.7)}
    expected = sum(0.5 * math.exp(-s) * L[t].item() + 0.5 * s for t, s in (("a", 0.3), ("b", -1.2)))
    assert float(u.step(L).detach()) == pytest.approx(expected, rel=1e-6)
    assert u.weights()["a"] == pytest.approx(0.5 * math.exp(-0.3))
    assert u.weights()["b"] == pytest.approx(0.5 * math.exp(1.2))


def test_uncertainty_learns_the_loss_scales():
    """With fixed losses the optimum of 0.5 e^-s L + 0.5 s is e^s = L: sigma^2 -> loss scale."""
    u = Uncertainty(["big", "small"], init=0.0)
    opt = torch.optim.Adam(u.parameters(), lr=0.05)
    L = {"big": torch.tensor(8.0), "small": torch.tensor(0.25)}
    for _ in range(300):
        opt.zero_grad()
        u.step(L).backward()
        opt.step()
    var = torch.exp(u.log_var.detach())
    assert var[0].item() == pytest.approx(8.0, rel=0.02)
    assert var[1].item() == pytest.approx(0.25, rel=0.02)
    assert u.weights()["small"] > u.weights()["big"]  # the noisier task counts less


class Toy(nn.Module):
    """A shared layer W and one linear head per task."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(4, 8)
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 1), "b": nn.Linear(8, 1)})

    def forward(self, x):
        h = torch.relu(self.shared(x))
        return {t: head(h).squeeze(-1) for t, head in self.heads.items()}

    def groups(self) -> ParamGroups:
        return ParamGroups(last_shared=(self.shared.weight,))


def _losses(model, x, scale=None, offset=None):
    scale, offset = scale or {}, offset or {}
    out = model(x)
    return {t: scale.get(t, 1.0) * (out[t] ** 2).mean() + offset.get(t, 0.0) for t in out}


def test_gradnorm_lowers_the_weight_of_the_larger_gradient():
    model, x = Toy(), torch.randn(64, 4)
    g = GradNorm(["a", "b"], alpha=1.5, lr=0.05)
    g.attach(model.groups())
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())  # norms differ by scale only
    for _ in range(20):
        g.step(_losses(model, x, scale={"b": 10.0}))
        w = g.weights()
        assert sum(w.values()) == pytest.approx(2.0, rel=1e-5)  # sum_i w_i = K
        assert all(v > 0 for v in w.values())
    assert w["b"] < 0.5 < 1.5 < w["a"]


def test_gradnorm_raises_the_weight_of_the_slower_task():
    """Equal gradients; task a's loss ratio L_a/L_a(0) stays higher (it trains slower)."""
    model, x = Toy(), torch.randn(64, 4)
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    g = GradNorm(["a", "b"], alpha=1.5, lr=0.05)
    g.attach(model.groups())
    g.step(_losses(model, x, offset={"a": 1.0, "b": 1.0}))  # L(0): equal
    for _ in range(20):  # now b's constant part is gone: b looks much further along
        g.step(_losses(model, x, offset={"a": 1.0, "b": 0.0}))
    w = g.weights()
    assert sum(w.values()) == pytest.approx(2.0, rel=1e-5)
    assert w["a"] > 1.2 and w["b"] < 0.8


def test_gradnorm_gives_the_model_the_weighted_sum_with_weights_detached():
    model, x = Toy(), torch.randn(64, 4)
    g = GradNorm(["a", "b"])
    g.attach(model.groups())
    with torch.no_grad():
        g.w.copy_(torch.tensor([1.5, 0.5]))
    losses = _losses(model, x)
    total = g.step(losses)
    expected = 1.5 * losses["a"].item() + 0.5 * losses["b"].item()
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert total.grad_fn is not None and g.w.grad is not None
    w_grad = g.w.grad.clone()
    total.backward()  # does not touch w: the model's loss holds w constant
    assert torch.equal(g.w.grad, w_grad)
    assert model.shared.weight.grad is not None


def test_gradnorm_does_no_update_without_gradients():
    model, x = Toy(), torch.randn(64, 4)
    g = GradNorm(["a", "b"])
    g.attach(model.groups())
    with torch.no_grad():
        g.step(_losses(model, x, scale={"b": 10.0}))  # evaluation: no graph
    assert g.weights() == {"a": 1.0, "b": 1.0} and g.initial is None
