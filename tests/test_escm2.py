"""ESCM² (Wang et al., SIGIR 2022): the counterfactual regulariser against a per-sample
reference of docs/architectures.md's equations, with the compiled model's own weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from mtl_dsl.api import check_text
from mtl_dsl.language.size import model_size
from mtl_dsl.model.compiler import CompiledModel, compile_model

ROOT = Path(__file__).resolve().parent.parent
B = 24

SPEC = """
model escm
data synthetic.funnel(rows=100)
feature d = dense(4)
label click, purchase
label both = click & purchase
input x = concat(d)
tower t_ctr = mlp(x, 8)
tower t_cvr = mlp(x, 6)
task ctr: binary(label=click) from t_ctr
task cvr: binary(label=purchase, loss=none, where=click) from t_cvr
task ctcvr: binary(label=both) = ctr * cvr
transfer ctr -> cvr = {call}
"""


def compiled(call: str) -> CompiledModel:
    checked = check_text(SPEC.format(call=call)).raise_for_errors()
    torch.manual_seed(0)
    return compile_model(checked.spec, checked.graph)


def batch_and_labels(seed: int = 3) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    click = (torch.rand(B, generator=g) < 0.5).float()
    buy = click * (torch.rand(B, generator=g) < 0.5).float()
    return {"d": torch.randn(B, 4, generator=g)}, {"ctr": click, "cvr": buy,
                                                   "ctcvr": click * buy}


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def reference(out: dict, labels: dict, clip: float, weight: float,
              imputed: list[float] | None = None) -> float:
    """One row at a time: e_i = BCE(r_i, pCVR_i) on clicked rows, t_i = max(pCTR_i, clip);
    IPS: 1/B sum o e / t; DR: 1/B sum [e_hat + o (e - e_hat) / t] + 1/B sum o (e - e_hat)^2 / t."""
    total = 0.0
    for i in range(B):
        o, r = float(labels["ctr"][i]), float(labels["cvr"][i])
        p = sigmoid(float(out["cvr"][i]))
        e = -(r * math.log(p) + (1 - r) * math.log(1 - p)) if o else 0.0
        t = max(sigmoid(float(out["ctr"][i])), clip)
        if imputed is None:
            total += o * e / t
        else:
            h = imputed[i]
            total += h + o * (e - h) / t + o * (e - h) ** 2 / t
    return weight * total / B


def imputation_reference(model: CompiledModel, x: torch.Tensor) -> list[float]:
    """e_hat = w2 . relu(W1 x + b1) + b2, written out from the copied weights."""
    mlp, head = model.towers["imputation>cvr"], model.heads["imputation>cvr"]
    (lin,) = mlp.linears
    hidden = torch.relu(x @ lin.weight.detach().T + lin.bias.detach())
    return (hidden @ head.proj.weight.detach().T + head.proj.bias.detach()).squeeze(-1).tolist()


def test_ips_matches_the_per_sample_reference() -> None:
    model = compiled("counterfactual(mode=ips, weight=0.5, clip=0.2)").eval()
    batch, labels = batch_and_labels()
    out = model(batch)
    aux = {k: v.detach() for k, v in model.aux_losses(out, {}, labels).items()}
    assert list(aux) == ["counterfactual:ctr->cvr"] == model.aux_loss_names()
    want = reference({k: v.detach() for k, v in out.items()}, labels, 0.2, 0.5)
    assert float(aux["counterfactual:ctr->cvr"]) == pytest.approx(want, rel=1e-5)


def test_ips_clip_bounds_the_weights() -> None:
    model = compiled("counterfactual(mode=ips, clip=0.9)").eval()
    batch, labels = batch_and_labels()
    out = model(batch)
    got = float(model.aux_losses(out, {}, labels)["counterfactual:ctr->cvr"].detach())
    out = {k: v.detach() for k, v in out.items()}
    assert got == pytest.approx(reference(out, labels, 0.9, 0.1), rel=1e-5)
    assert got != pytest.approx(reference(out, labels, 0.05, 0.1), rel=1e-3)


def test_dr_matches_the_per_sample_reference() -> None:
    model = compiled("counterfactual(mode=dr, weight=0.3, clip=0.1, imputation=mlp(5))").eval()
    assert model.aux_keeps() == ("x",)
    batch, labels = batch_and_labels()
    out, kept = model.forward_keeping(batch, model.aux_keeps())
    aux = model.aux_losses(out, kept, labels)["counterfactual:ctr->cvr"].detach()
    imputed = imputation_reference(model, kept["x"].detach())
    want = reference({k: v.detach() for k, v in out.items()}, labels, 0.1, 0.3, imputed)
    assert float(aux) == pytest.approx(want, rel=1e-5)


def test_dr_gradients_follow_joint_learning() -> None:
    """The propensity trains nothing; the imputation tower learns only its squared error and
    the CVR tower only the DR risk with e_hat held fixed."""
    model = compiled("counterfactual(mode=dr, weight=1.0, clip=0.1, imputation=mlp(5))")
    batch, labels = batch_and_labels()
    out, kept = model.forward_keeping(batch, model.aux_keeps())
    model.aux_losses(out, kept, labels)["counterfactual:ctr->cvr"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.towers["t_ctr"].parameters())
    got_imp = [p.grad.clone() for p in model.towers["imputation>cvr"].parameters()]
    got_cvr = [p.grad.clone() for p in model.towers["t_cvr"].parameters()]
    model.zero_grad()
    out, kept = model.forward_keeping(batch, model.aux_keeps())
    o, r = labels["ctr"], labels["cvr"]
    t = torch.sigmoid(out["ctr"].detach()).clamp_min(0.1)
    e = o * nn.functional.binary_cross_entropy_with_logits(out["cvr"], r, reduction="none")
    h = model.heads["imputation>cvr"](model.towers["imputation>cvr"](kept["x"]))
    ((o * (e.detach() - h) ** 2 / t).mean()).backward(retain_graph=True)
    assert_close([p.grad for p in model.towers["imputation>cvr"].parameters()], got_imp)
    model.zero_grad()
    ((h.detach() + o * (e - h.detach()) / t).mean()).backward()
    assert_close([p.grad for p in model.towers["t_cvr"].parameters()], got_cvr)


def test_unclicked_rows_with_missing_conversions_stay_finite() -> None:
    model = compiled("counterfactual(mode=dr)")
    batch, labels = batch_and_labels()
    labels["cvr"] = torch.where(labels["ctr"] > 0, labels["cvr"], torch.nan)
    out, kept = model.forward_keeping(batch, model.aux_keeps())
    assert torch.isfinite(model.aux_losses(out, kept, labels)["counterfactual:ctr->cvr"])


def test_the_size_estimate_counts_the_imputation_tower() -> None:
    checked = check_text(SPEC.format(call="counterfactual(mode=dr, imputation=mlp(7, 3))"))
    torch.manual_seed(0)
    model = compile_model(checked.spec, checked.graph)
    assert model_size(checked.spec, checked.graph).params == model.param_count()
    assert any(k.startswith("towers.imputation>cvr.") for k in model.state_dict())
    assert sum(r["params"] for r in model.summary()) == model.param_count()


@pytest.mark.parametrize("call,code,text", [
    ("counterfactual(mode=ips, imputation=mlp(8))", "E301", "needs mode=dr"),
    ("counterfactual(clip=0)", "E301", "clip"),
    ("counterfactual(mode=tobit)", "E301", "mode"),
])
def test_bad_parameters_are_diagnosed(call: str, code: str, text: str) -> None:
    diags = check_text(SPEC.format(call=call)).diagnostics
    assert any(d.code == code and text in d.message for d in diags), diags


def test_a_three_task_chain_is_refused() -> None:
    text = SPEC.format(call="counterfactual()").replace("ctr -> cvr", "ctr -> cvr -> buy") + (
        "tower t_buy = mlp(x, 4)\ntask buy: binary(label=purchase) from t_buy\n")
    assert [d.code for d in check_text(text).diagnostics if d.severity == "error"] == ["E434"]


def test_the_shipped_spec_logs_its_risk(tmp_path: Path) -> None:
    from mtl_dsl.api import load, train

    spec = load(ROOT / "specs" / "escm2.mtl")
    params = spec.data.params.model_copy(update={"rows": 600})
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"params": params})})
    result = train(spec, epochs=1, out_dir=tmp_path, progress=False)
    losses = result.history[-1]["train_loss"]
    assert losses["counterfactual:ctr->cvr"] > 0 and math.isfinite(losses["ctr"])
