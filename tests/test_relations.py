"""Explicit task relations: ESMM/ESM2 products, AITM's transfer and label constraint,
MetaHeac's gates, critics and meta-learning, checked against the published equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from mtl_dsl.language import registry as reg
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.data.prepare import prepare
from mtl_dsl.data.values import label_key
from mtl_dsl.training.maml import adapt, query_losses
from mtl_dsl.training.metrics import task_loss
from mtl_dsl.model.relations import AIT, label_constraint
from mtl_dsl.data.synthetic import funnel
from mtl_dsl.api import check_text, load

HEAD = """model m
data synthetic.funnel(rows=3000, seed=3)
feature user = sparse(dim=8)
feature item = sparse(dim=8)
feature d = dense(4)
label click, daction, purchase, activation
label ctcvr_label = click & purchase
label ctavr_label = click & daction
input x = concat(user, item, d)
"""


def compiled(text: str, seed: int = 0):
    spec = check_text(HEAD + text).raise_for_errors().spec
    torch.manual_seed(seed)
    data = prepare(spec)
    model = compile_model(spec, None, data.encoders.vocab_sizes())
    batch = next(data.train.batches(256, shuffle=False))
    return spec, model.eval(), batch


ESMM = """tower t_ctr = mlp(x, 16)
tower t_cvr = mlp(x, 16)
task ctr: binary(label=click) from t_ctr
task cvr: binary(label=purchase, loss=none, where=click) from t_cvr
task ctcvr: binary(label=ctcvr_label) = ctr * cvr
"""


def test_esmm_output_and_loss_follow_the_formulas():
    spec, model, batch = compiled(ESMM)
    out = model(batch)
    p_ctr, p_cvr = torch.sigmoid(out["ctr"]), torch.sigmoid(out["cvr"])
    torch.testing.assert_close(torch.sigmoid(out["ctcvr"]), p_ctr * p_cvr, rtol=1e-4, atol=1e-6)
    click, buy = batch[label_key("ctr")], batch[label_key("cvr")]
    by_hand = F.binary_cross_entropy(p_ctr, click) + \
        F.binary_cross_entropy(p_ctr * p_cvr, click * buy)
    ours = sum(task_loss(t.kind, out[t.name], batch[label_key(t.name)]) for t in spec.supervised)
    torch.testing.assert_close(ours, by_hand, rtol=1e-4, atol=1e-6)
    assert [t.name for t in spec.supervised] == ["ctr", "ctcvr"]


def test_esmm_cvr_tower_learns_only_through_the_product():
    spec, model, batch = compiled(ESMM)
    model.train()
    out = model(batch)
    cvr_params = [p for n, p in model.named_parameters() if "t_cvr" in n]
    assert cvr_params
    ctr_loss = task_loss("binary", out["ctr"], batch[label_key("ctr")])
    grads = torch.autograd.grad(ctr_loss, cvr_params, allow_unused=True, retain_graph=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    ctcvr_loss = task_loss("binary", out["ctcvr"], batch[label_key("ctcvr")])
    grads = torch.autograd.grad(ctcvr_loss, cvr_params, allow_unused=True)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads)


def test_esm2_products_follow_the_formulas():
    spec, model, batch = compiled("""tower t1 = mlp(x, 8)
tower t2 = mlp(x, 8)
tower t3 = mlp(x, 8)
tower t4 = mlp(x, 8)
task ctr: binary(label=click) from t1
task dar: binary(label=daction, loss=none) from t2
task buy_d: binary(label=purchase, loss=none) from t3
task buy_o: binary(label=purchase, loss=none) from t4
task ctavr: binary(label=ctavr_label) = ctr * dar
task ctcvr: binary(label=ctcvr_label) = ctr * (dar * buy_d + (1 - dar) * buy_o)
""")
    out = model(batch)
    y1, y2, y3, y4 = (torch.sigmoid(out[t]) for t in ("ctr", "dar", "buy_d", "buy_o"))
    torch.testing.assert_close(torch.sigmoid(out["ctavr"]), y1 * y2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.sigmoid(out["ctcvr"]), y1 * (y2 * y3 + (1 - y2) * y4),
                               rtol=1e-4, atol=1e-6)
    ctcvr = batch[label_key("ctcvr")]
    assert torch.equal(ctcvr, batch[label_key("ctr")] * batch[label_key("buy_d")])


def test_ait_module_matches_the_papers_equations():
    torch.manual_seed(0)
    ait = AIT(dim=6, k=4)
    p, q = torch.randn(5, 6), torch.randn(5, 6)
    z = ait(p, q)
    for b in range(5):
        units = [p[b], q[b]]
        scores = torch.stack([ait.h2(u) @ ait.h3(u) / math.sqrt(4) for u in units])
        w = torch.softmax(scores, 0)
        expected = w[0] * ait.h1(units[0]) + w[1] * ait.h1(units[1])
        torch.testing.assert_close(z[b], expected, rtol=1e-5, atol=1e-6)


AITM = """tower t1 = mlp(x, 8)
tower t2 = mlp(x, 8)
tower t3 = mlp(x, 8)
task click: binary(label=click) from t1
task buy: binary(label=purchase) from t2
task act: binary(label=activation) from t3
transfer click -> buy -> act = ait(k=8, constraint=0.6)
"""


def test_aitm_chain_matches_a_hand_written_reference():
    """z1 = q1; z_t = AIT(g_(t-1)(z_(t-1)), q_t); y_t = sigmoid(head_t(z_t))."""
    spec, model, batch = compiled(AITM)
    out = model(batch)
    env = model.trace(batch)  # every node's output by name
    towers = {t: model.towers[f"t{i}"] for i, t in enumerate(("click", "buy", "act"), 1)}
    q = {t: towers[t](env["x"]) for t in towers}
    z = {"click": q["click"]}
    for prev, cur in (("click", "buy"), ("buy", "act")):
        edge = model.transfers[f"{prev}->{cur}"]
        flowed = edge.flow(z[prev])
        z[cur] = edge.ait(flowed, q[cur])
    for t in ("click", "buy", "act"):
        torch.testing.assert_close(out[t], model.heads[t](z[t]), rtol=1e-5, atol=1e-6)


def test_label_constraint_is_zero_when_probabilities_do_not_increase():
    logits = [torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.5]), torch.tensor([-1.0, 0.0])]
    assert label_constraint(logits).item() == 0.0


def test_label_constraint_penalises_a_later_step_and_pushes_it_down():
    earlier = torch.tensor([0.0, 0.0], requires_grad=True)
    later = torch.tensor([1.0, -1.0], requires_grad=True)
    loss = label_constraint([earlier, later])
    expected = (torch.sigmoid(torch.tensor(1.0)) - 0.5) / 2  # only row 0 violates, mean of 2
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert later.grad[0] > 0 and earlier.grad[0] < 0  # descent lowers later, raises earlier
    assert later.grad[1] == 0 and earlier.grad[1] == 0


def test_aitm_model_adds_the_weighted_label_constraint():
    spec, model, batch = compiled(AITM)
    out = model(batch)
    aux = model.aux_losses(out)
    assert list(aux) == model.aux_loss_names() == ["constraint:click->buy->act"]
    expected = 0.6 * label_constraint([out["click"], out["buy"], out["act"]])
    torch.testing.assert_close(aux["constraint:click->buy->act"], expected)


HEAC = """extract h = heac(x, experts=4, critics=3, expert=mlp(16, 8), critic=mlp(8),
                 task_dim=8, tasks=[ctr, ctcvr])
task ctr: binary(label=click) from h.ctr
task ctcvr: binary(label=ctcvr_label) from h.ctcvr
train meta=maml inner_lr=0.1 inner_steps=2 support=0.5
"""


def test_metaheac_inner_step_changes_only_a_copy():
    spec, model, batch = compiled(HEAC)
    model.train()
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    fast = adapt(model, params, batch, spec.task("ctr"), 0.1, 2)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    changed = [n for n in fast if not torch.equal(fast[n].detach(), before[n])]
    assert any("experts" in n for n in changed) and any("critics" in n for n in changed)


def test_metaheac_outer_update_changes_the_shared_parameters():
    spec, model, batch = compiled(HEAC)
    model.train()
    shared = model.shared_parameters()
    assert shared
    before = [p.detach().clone() for p in shared]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = query_losses(model, batch, list(spec.supervised), 0.1, 2, 0.5)
    assert set(losses) == {"ctr", "ctcvr"}
    sum(losses.values()).backward()
    opt.step()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, shared))


def test_metaheac_task_gates_differ_by_task():
    spec, model, batch = compiled(HEAC)
    x = torch.randn(4, 20)
    g_ctr, g_ctcvr = model.gates["h-gate_ctr"], model.gates["h-gate_ctcvr"]
    assert not torch.allclose(g_ctr(x), g_ctcvr(x))
    out = model(batch)
    assert not torch.allclose(out["ctr"], out["ctcvr"])


def test_funnel_purchase_only_after_click_and_rates_depend_on_features():
    f = funnel(reg.SyntheticFunnel(rows=40000, seed=1))
    assert f["purchase"][f["click"] == 0].sum() == 0
    assert f["activation"][f["purchase"] == 0].sum() == 0
    assert np.array_equal(f["daction"] + f["oaction"], f["click"])
    high = f["d_0"] > 1
    low = f["d_0"] < -1
    assert abs(f["click"][high].mean() - f["click"][low].mean()) > 0.01


@pytest.mark.parametrize("name", ["esmm", "esm2", "aitm", "metaheac"])
def test_shipped_relation_specs_train(tmp_path, name):
    from mtl_dsl.training.loop import train

    spec = load(ROOT / "specs" / f"{name}.mtl")
    data = spec.data.params.model_copy(update={"rows": 8000})
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"params": data})})
    result = train(spec, epochs=1, out_dir=tmp_path, progress=False)
    first = result.history[0]["val"]
    last = result.history[-1]["val"]
    trained = [t.name for t in spec.supervised]
    assert sum(last[t]["loss"] for t in trained) < sum(first[t]["loss"] for t in trained)


def test_esmm_ctcvr_auc_beats_chance_and_cvr_auc_is_on_clicks(tmp_path):
    from mtl_dsl.training.loop import train

    spec = load(ROOT / "specs" / "esmm.mtl")
    result = train(spec, epochs=2, out_dir=tmp_path, progress=False)
    val = result.best_metrics
    assert val["ctcvr"]["auc"] > 0.65
    assert val["ctr"]["auc"] > 0.65
    assert 0.5 < val["cvr"]["auc"] <= 1.0  # computed on clicked impressions only
    clicks = int(result.data.val.tensors["mask:cvr"].sum())
    assert 0 < clicks < len(result.data.val)


@pytest.mark.parametrize("name", ["ali_ccp_esmm", "aliexpress_aitm"])
def test_real_data_samples_train_end_to_end(tmp_path, name):
    from mtl_dsl.training.loop import train

    result = train(load(ROOT / "specs" / f"{name}.mtl"), epochs=1, out_dir=tmp_path,
                   progress=False)
    assert (result.run_dir / "checkpoint.pt").is_file()
    assert all(math.isfinite(m["loss"]) for m in result.history[-1]["val"].values())
