"""Every weighting method against a small closed-form case, then end to end on the MMoE.

Gradient methods: PCGrad's projection, MGDA's min-norm point, UPGrad's non-conflicting
result, DB-MTL's balancing; where the gradients go (shared parameters or representation,
task-specific parameters untouched, embeddings only on request). Loss methods: DWA, RLW,
GLS, IMTL-L, FAMO, STCH against their formulas, and every method's logged weights are
dtotal/dL_i.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import ROOT
from mtl_dsl.training import plots
from mtl_dsl.training.weighting import aggregators, balancing
from mtl_dsl.data.prepare import prepare
from mtl_dsl.data.values import label_key
from mtl_dsl.language import registry as reg
from mtl_dsl.language.overrides import with_weighting
from mtl_dsl.training import loop as train_mod
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.training.metrics import task_loss
from mtl_dsl.api import check_text, load
from mtl_dsl.training.weighting.balancing import GradientMethod
from mtl_dsl.training.groups import ParamGroups
from mtl_dsl.training.weighting.losses import (DWA, FAMO, GLS, RLW, STCH, ImtlL, dwa_weights,
                                     famo_logit_grad, famo_loss, rlw_weights, stch_loss)
from mtl_dsl.training.weighting.methods import build, make

MMOE = ROOT / "specs" / "mmoe.mtl"
GRADIENT = [k for k, c in reg.WEIGHTINGS.items() if c.family == "gradient"]
LOSS = [k for k, c in reg.WEIGHTINGS.items() if c.family == "loss"]
ONES = torch.ones(2)
L2 = torch.tensor([1.0, 2.0])


def agg(kind: str, fixed: torch.Tensor = ONES, **params):
    return aggregators.aggregator(kind, reg.WEIGHTINGS[kind](**params), fixed)


# --------------------------------------------------------------------------
# Gradient aggregators on two conflicting gradients
# --------------------------------------------------------------------------

G1, G2 = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([-2.0, 1.0, 0.0])  # g1 . g2 = -2 < 0
J = torch.stack([G1, G2])


def test_pcgrad_projects_each_gradient_off_the_other():
    g1 = G1 - (G1 @ G2) / (G2 @ G2) * G2
    g2 = G2 - (G2 @ G1) / (G1 @ G1) * G1
    g, w = agg("pcgrad")(J, L2)
    assert torch.allclose(g, g1 + g2, atol=1e-5)
    assert torch.allclose(w @ J, g, atol=1e-5)  # the logged weights reproduce the update
    assert g @ G1 >= -1e-6 and g @ G2 >= -1e-6


def test_pcgrad_leaves_agreeing_gradients_alone():
    J2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    g, w = agg("pcgrad")(J2, L2)
    assert torch.allclose(g, J2.sum(0)) and torch.allclose(w, ONES)


def test_mgda_finds_the_min_norm_point_of_two_gradients():
    gamma = float(((G2 - G1) @ G2) / ((G1 - G2) @ (G1 - G2)))  # closed form for two tasks
    gamma = min(max(gamma, 0.0), 1.0)
    expected = gamma * G1 + (1 - gamma) * G2
    g, w = agg("mgda", epsilon=1e-6, iters=1000)(J, L2)
    assert torch.allclose(g, expected, atol=1e-3)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-4) and (w >= 0).all()
    assert (g @ G1).item() == pytest.approx((g @ G2).item(), abs=1e-3)  # interior: equal progress


def test_mgda_gradient_normalisation_rescales_the_rows():
    g, w = agg("mgda", norm="l2", epsilon=1e-6, iters=1000)(J, L2)
    U = J / J.norm(dim=1, keepdim=True)
    g_unit, _ = agg("mgda", epsilon=1e-6, iters=1000)(U, L2)
    assert torch.allclose(g, g_unit, atol=1e-4)
    assert torch.allclose(w @ J, g, atol=1e-4)  # weights are on the raw gradients


@pytest.mark.parametrize("pref", [None, torch.tensor([3.0, 1.0, 1.0])])
def test_upgrad_conflicts_with_no_task_gradient(pref):
    torch.manual_seed(0)
    for _ in range(5):
        J3 = torch.randn(3, 10)
        g, w = agg("upgrad", fixed=torch.ones(3) if pref is None else pref)(J3, torch.ones(3))
        assert (J3 @ g >= -1e-5).all(), J3 @ g
        assert torch.allclose(w @ J3, g, atol=1e-4)


@pytest.mark.parametrize("kind", ["dualproj", "cagrad", "imtl_g", "nashmtl", "aligned_mtl",
                                  "config", "fairgrad"])
def test_conflict_averse_methods_do_not_hurt_either_task(kind):
    g, w = agg(kind)(J, L2)
    assert g @ G1 > -1e-4 and g @ G2 > -1e-4
    assert torch.isfinite(w).all()


def test_imtl_g_gives_equal_projections():
    g, _ = agg("imtl_g")(J, L2)
    u1, u2 = G1 / G1.norm(), G2 / G2.norm()
    assert (g @ u1).item() == pytest.approx((g @ u2).item(), rel=1e-4)


def test_graddrop_keeps_one_sign_per_coordinate():
    torch.manual_seed(0)
    g, _ = agg("graddrop")(J, L2)
    for col in range(J.shape[1]):  # each coordinate keeps the positive or the negative parts
        kept = {float(v) for v in J[:, col] if v != 0}
        assert float(g[col]) in {0.0, sum(v for v in kept if v > 0), sum(v for v in kept if v < 0)}


def test_dbmtl_balances_an_average_of_log_loss_gradients():
    """m_1 = (1 - beta) J_1, m_2 = J_2 + beta (m_1 - J_2); g = sum_i max|m| / |m_i| m_i."""
    db = agg("dbmtl", beta=0.9, sigma=0.0)
    J1, J2 = torch.tensor([[3.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    db(J1, L2)
    m = J2 + 0.9 * (0.1 * J1 - J2)
    alpha = m.norm(dim=1).max() / m.norm(dim=1)
    g, w = db(J2, L2)
    assert torch.allclose(g, alpha @ m, atol=1e-5) and torch.allclose(w, alpha, atol=1e-5)
    assert (w * m.norm(dim=1)).tolist() == pytest.approx([m.norm(dim=1).max().item()] * 2)


@pytest.mark.parametrize("zero_row", [False, True])
def test_config_on_the_gram_factor_equals_torchjds_config(zero_row):
    import torchjd.aggregation as A

    torch.manual_seed(1)
    J3 = torch.randn(3, 500)
    if zero_row:
        J3[1] = 0
    g, w = agg("config", fixed=torch.ones(3))(J3, torch.ones(3))
    assert torch.allclose(g, A.ConFIG()(J3), atol=1e-4)
    assert torch.allclose(w @ J3, g, atol=1e-5)


def test_effective_weights_of_a_coordinatewise_aggregator_fit_its_update():
    torch.manual_seed(1)
    J3 = torch.randn(3, 6)
    g, w = agg("trimmed_mean", fixed=torch.ones(3), trim=1)(J3, torch.ones(3))
    assert torch.allclose(g, J3.median(0).values)  # 3 rows, trim 1: the median
    assert torch.allclose(w, aggregators.coefficients(J3, g))  # least squares in the rows' span


# --------------------------------------------------------------------------
# Where the gradients are taken, and where the update goes
# --------------------------------------------------------------------------

def tiny(path=MMOE, rows: int = 300, **train):
    spec = load(path)
    params = spec.data.params.model_copy(update={"rows": rows})
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"params": params})})
    if train:
        tp = spec.train.params.model_copy(update=train)
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"params": tp})})
    return spec


def model_and_losses(spec):
    torch.manual_seed(0)
    prep = prepare(spec)
    model = compile_model(spec, None, prep.encoders.vocab_sizes())
    batch = next(prep.train.batches(64, torch.Generator().manual_seed(0)))

    def forward(keep=()):
        """The task losses and the kept shared outputs of one forward pass."""
        out, kept = model.forward_keeping(batch, keep)
        return {t.name: task_loss(t.kind, out[t.name], batch[label_key(t.name)])
                for t in spec.supervised}, kept

    def losses():
        return forward()[0]
    return model, losses, forward


def groups(model):
    return ParamGroups.of(model, model.graph)


def grads_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("on,kind,fixed", [
    ("parameters", "pcgrad", {"a": 1.0, "b": 1.0}),
    ("parameters", "pcgrad", {"a": 2.0, "b": 0.5}),  # rows scaled by weight=
    ("parameters", "upgrad", {"a": 3.0, "b": 1.0}),  # weight= as the preference vector
    ("parameters", "mgda", {"a": 3.0, "b": 1.0}),  # ignores weight=
    ("representation", "pcgrad", {"a": 2.0, "b": 1.0})])
def test_shared_parameters_get_the_aggregate_and_towers_their_own_gradient(on, kind, fixed):
    spec = tiny()
    model, losses, forward = model_and_losses(spec)
    own = {t: grads_of(model, losses()[t]) for t in ("a", "b")}
    params = reg.WEIGHTINGS[kind](on=on)
    scheme = build(kind, params, ["a", "b"], fixed)
    scheme.attach(groups(model))
    got = grads_of(model, scheme.step(*forward(scheme.keeps())))
    c = {t: fixed[t] if params.honours_weights() else 1.0 for t in fixed}
    shared = {id(p) for p in model.shared_parameters()}
    rows = {t: torch.cat([own[t][n].reshape(-1) for n, p in model.named_parameters()
                          if id(p) in shared]) for t in ("a", "b")}
    if on == "parameters":  # the shared part gets exactly the method's aggregate of the rows
        J = torch.stack([rows["a"], rows["b"]])
        expected, _ = agg(kind, torch.tensor([fixed["a"], fixed["b"]]))(
            J * torch.tensor([[c["a"]], [c["b"]]]) if kind == "pcgrad" else J, L2)
        flat = torch.cat([got[n].reshape(-1) for n, p in model.named_parameters()
                          if id(p) in shared])
        assert torch.allclose(flat, expected, atol=1e-5)
    for name, p in model.named_parameters():
        if id(p) in shared:
            continue
        mine = [t for t in ("a", "b") if own[t][name] is not None and own[t][name].any()]
        assert len(mine) == 1, name  # task-specific: its own task's gradient (times weight=
        t = mine[0]  # when the method multiplies the weights)
        assert torch.allclose(got[name], c[t] * own[t][name], atol=1e-6), name


def test_representation_gradients_count_every_path_once_in_ple():
    """PLE's level-1 shared experts feed task gates and the level-2 shared experts. An
    aggregator that keeps only task a's row must give the shared parameters exactly the
    gradient of L_a (no path counted twice, none missed); task b's own blocks keep L_b's."""
    spec = tiny(ROOT / "specs" / "ple.mtl")
    model, losses, forward = model_and_losses(spec)
    ga, gb = grads_of(model, losses()["a"]), grads_of(model, losses()["b"])
    b = balancing.Balancer(lambda J, L: (J[0], torch.tensor([1.0, 0.0])), on="representation")
    b.attach(groups(model))
    assert len(b.reps) >= 2 and any(b.below)  # nested representations
    ls, kept = forward(b.keeps())
    S, _, _ = b.surrogate([ls["a"], ls["b"]], L2, b.tensors(kept), ONES, ONES)
    got = grads_of(model, S)
    shared = {id(p) for p in model.shared_parameters()}
    for name, p in model.named_parameters():
        if id(p) in shared:
            assert torch.allclose(got[name], ga[name], atol=1e-6), name
        elif gb[name] is not None and (ga[name] is None or not ga[name].any()):
            assert torch.allclose(got[name], gb[name], atol=1e-6), name


SPARSE = """model sparse
data synthetic.correlated(rows=200, dim=4)
feature u = sparse(vocab=50, dim=4, column=x_0)
feature x = dense(4)
label y1, y2
input i = concat(u, x)
experts e[2] = mlp(i, 8)
gate g_a = softmax(i) over e
gate g_b = softmax(i) over e
tower t_a = mlp(g_a, 4)
tower t_b = mlp(g_b, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""


@pytest.mark.parametrize("embeddings", [False, True])
def test_embedding_tables_are_balanced_only_on_request(embeddings):
    spec = check_text(SPARSE).raise_for_errors().spec
    model = compile_model(spec, None, {"u": 50})
    table = sum(p.numel() for p in model.embedding_parameters())
    dense = sum(p.numel() for p in model.shared_parameters())
    b = balancing.Balancer(lambda J, L: (J.sum(0), ONES), embeddings=embeddings)
    b.attach(groups(model))
    assert sum(p.numel() for p in b.params) == dense + table * embeddings


def test_gradient_method_costs_at_most_k_plus_one_backward_passes(monkeypatch):
    spec = tiny()
    model, losses, _ = model_and_losses(spec)
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    scheme = build("upgrad", reg.UpgradWeighting(), ["a", "b"])
    scheme.attach(groups(model))
    scheme.step(losses()).backward()  # + one ordinary backward pass
    assert len(calls) == 2  # one restricted backward pass per task


# --------------------------------------------------------------------------
# Loss-based methods against their formulas
# --------------------------------------------------------------------------

def test_dwa_weights_from_loss_histories():
    w = dwa_weights(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0]), t=2.0)
    e = [math.exp(0.5 / 2), math.exp(1.0 / 2)]
    assert w.tolist() == pytest.approx([2 * e[0] / sum(e), 2 * e[1] / sum(e)], rel=1e-6)
    assert w.sum().item() == pytest.approx(2.0)  # sum_i w_i = K


def test_dwa_waits_two_epochs_then_favours_the_slower_task():
    d = DWA({"a": 1.0, "b": 2.0}, t=2.0)
    L = {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}
    d.step(L)
    assert d.weights() == {"a": 1.0, "b": 2.0}  # weights 1 (times weight=) at first
    d.end_epoch({"a": 4.0, "b": 4.0})
    d.step(L)
    assert d.weights() == {"a": 1.0, "b": 2.0}
    d.end_epoch({"a": 1.0, "b": 3.0})  # a fell to a quarter, b to three quarters
    total = d.step(L)
    lam = dwa_weights(torch.tensor([1.0, 3.0]), torch.tensor([4.0, 4.0]))
    assert d.weights()["b"] / 2 > d.weights()["a"]
    assert d.weights()["a"] == pytest.approx(lam[0].item())
    assert total.item() == pytest.approx(lam[0].item() + 2 * lam[1].item())


@pytest.mark.parametrize("dist", ["normal", "dirichlet", "uniform"])
def test_rlw_weights_are_random_and_sum_to_one(dist):
    torch.manual_seed(0)
    draws = torch.stack([rlw_weights(3, dist) for _ in range(50)])
    assert torch.allclose(draws.sum(1), torch.ones(50), atol=1e-6)
    assert (draws > 0).all() and draws.std(0).min() > 0.01


def test_rlw_multiplies_the_tasks_weights():
    torch.manual_seed(0)
    r = RLW({"a": 1.0, "b": 3.0})
    r.step({"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    torch.manual_seed(0)
    lam = rlw_weights(2)
    assert list(r.weights().values()) == pytest.approx([lam[0].item(), 3 * lam[1].item()])


def test_gls_is_the_geometric_mean():
    L = {"a": torch.tensor(4.0), "b": torch.tensor(9.0)}
    assert GLS({"a": 1.0, "b": 1.0}).step(L).item() == pytest.approx(6.0)
    weighted = GLS({"a": 3.0, "b": 1.0}).step(L).item()
    assert weighted == pytest.approx(4.0 ** 0.75 * 9.0 ** 0.25)


def test_imtl_l_scales_every_loss_to_one():
    m = ImtlL(["big", "small"])
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    L = {"big": torch.tensor(8.0), "small": torch.tensor(0.25)}
    for _ in range(400):
        opt.zero_grad()
        m.step(L).backward()
        opt.step()
    w = m.weights()
    assert w["big"] * 8.0 == pytest.approx(1.0, rel=0.02)  # exp(s_i) -> 1 / L_i
    assert w["small"] * 0.25 == pytest.approx(1.0, rel=0.02)


def test_famo_loss_and_update_follow_the_formulas():
    xi = torch.tensor([0.3, -0.2])
    L = torch.tensor([2.0, 0.5], requires_grad=True)
    total, w = famo_loss(L, xi)
    z = torch.softmax(xi, 0)
    c = (z / (L.detach() + 1e-8)).sum()
    assert total.item() == pytest.approx(((z * torch.log(L.detach() + 1e-8)).sum() / c).item())
    assert torch.allclose(torch.autograd.grad(total, L)[0], w)  # dtotal/dL_i = z_i / (c L_i)
    assert w.sum().item() == pytest.approx(1.0, rel=1e-6)
    before, after = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.9])
    delta = torch.log(before) - torch.log(after)
    d = famo_logit_grad(xi, before, after)
    assert torch.allclose(d, z * (delta - z @ delta), atol=1e-6)


def test_famo_shifts_weight_to_the_task_that_improved_less():
    f = FAMO(["a", "b"], lr=0.1, decay=0.0)
    for _ in range(5):
        f.step({"a": torch.tensor(1.0, requires_grad=True),
                "b": torch.tensor(1.0, requires_grad=True)})
        f.after_step(lambda: {"a": torch.tensor(0.5), "b": torch.tensor(0.95)})
    z = torch.softmax(f.xi.detach(), 0)
    assert z[1] > 0.6 > z[0]


def test_stch_warms_up_on_log_losses_then_uses_the_nadir_point():
    s = STCH({"a": 1.0, "b": 1.0}, mu=0.5, warmup=1)
    for La, Lb in ((2.0, 1.0), (4.0, 3.0)):  # warmup epoch: sum of log-losses
        L = torch.tensor([La, Lb], requires_grad=True)
        total = s.step({"a": L[0], "b": L[1]})
        assert total.item() == pytest.approx(math.log(La) + math.log(Lb))
    s.end_epoch({"a": 3.0, "b": 2.0})
    assert s.nadir.tolist() == pytest.approx([3.0, 2.0])  # the warmup epoch's mean losses
    L = torch.tensor([1.5, 3.0], requires_grad=True)
    total = s.step({"a": L[0], "b": L[1]})
    logs = torch.log(torch.tensor([1.5 / 3.0, 3.0 / 2.0]))
    assert total.item() == pytest.approx(2 * 0.5 * torch.logsumexp(logs / 0.5, 0).item(),
                                         rel=1e-5)
    grad = torch.autograd.grad(total, L)[0]
    assert list(s.weights().values()) == pytest.approx(grad.tolist(), rel=1e-5)
    assert grad[1] > grad[0]  # the task furthest above its nadir point counts most


def test_stch_formula_with_preferences():
    L, n, pref = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0])
    total, _ = stch_loss(L, n, pref, mu=1.0)
    expected = 2 * math.log(math.exp(math.log(2.0)) + math.exp(3 * math.log(1.0)))
    assert total.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", [k for k in LOSS if k != "gradnorm"])
def test_logged_weights_are_the_derivative_of_the_total(kind):
    torch.manual_seed(0)
    scheme = build(kind, reg.WEIGHTINGS[kind](), ["a", "b"], {"a": 1.0, "b": 2.0})
    L = torch.tensor([0.7, 2.5], requires_grad=True)
    total = scheme.step({"a": L[0], "b": L[1]})
    grad = torch.autograd.grad(total, L)[0]
    assert list(scheme.weights().values()) == pytest.approx(grad.tolist(), rel=1e-5)


# --------------------------------------------------------------------------
# mtl check: tasks, sharing, solvers, ignored weights
# --------------------------------------------------------------------------

def spec_text(weighting: str, weight_a: float = 1.0) -> str:
    text = MMOE.read_text().replace("weighting uncertainty", f"weighting {weighting}")
    return text.replace("regression(label=y1)", f"regression(label=y1, weight={weight_a:g})")


def codes(text: str) -> list[str]:
    return [d.code for d in check_text(text).diagnostics]


@pytest.mark.parametrize("kind", list(reg.WEIGHTINGS))
def test_ignored_weights_warn_exactly_for_methods_that_do_not_multiply(kind):
    found = codes(spec_text(kind, weight_a=2.0))
    honours = reg.WEIGHTINGS[kind]().honours_weights()
    assert ("W004" in found) != honours, found
    assert "W004" not in codes(spec_text(kind))  # equal weights: nothing to ignore


def test_methods_refuse_too_few_tasks():
    assert "E601" in codes(spec_text("krum"))  # three tasks at least
    assert "E601" in codes(spec_text("trimmed_mean(trim=1)"))
    assert "E601" not in codes(spec_text("trimmed_mean"))


def test_missing_solver_is_a_warning_in_check_and_an_error_in_training(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cvxpy" else real(name, *a))
    checked = check_text(spec_text("cagrad"))
    assert [d.code for d in checked.diagnostics] == ["W005"] and checked.ok
    assert "mtl-dsl[solvers]" in checked.diagnostics[0].hint
    with pytest.raises(MtlError) as err:
        make(checked.spec)
    assert err.value.diagnostics[0].code == "E602" and "cvxpy" in str(err.value)


# --------------------------------------------------------------------------
# End to end: every method trains an epoch of the MMoE spec
# --------------------------------------------------------------------------

THREE = """model mmoe3 "three tasks, for methods that need them (Krum)"
data synthetic.correlated(rows=300, correlation=0.8, seed=1)
feature x = dense(100)
label y1, y2
experts e[4] = mlp(x, 8)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
gate g_c = softmax(x) over e
tower t_a = mlp(g_a, 4)
tower t_b = mlp(g_b, 4)
tower t_c = mlp(g_c, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
task c: regression(label=y1) from t_c
train batch=64
"""


@pytest.mark.parametrize("kind", list(reg.WEIGHTINGS))
def test_every_method_trains_an_epoch_of_mmoe(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot", lambda *a, **k: None)  # the plot is tested below
    if reg.WEIGHTINGS[kind].min_tasks > 2:
        spec = check_text(THREE).raise_for_errors().spec
    else:
        spec = tiny(batch=64)
    result = train_mod.train(with_weighting(spec, kind), epochs=1, out_dir=tmp_path,
                             progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    steps = [r for r in records if r["type"] == "step"]
    assert steps and all(math.isfinite(v) for r in steps for v in r["weights"].values())
    assert set(steps[-1]["weights"]) == {t.name for t in spec.supervised}
    last = [r for r in records if r["type"] == "epoch"][-1]
    assert math.isfinite(last["train_loss"]["a"]) and set(last["grad_cosine"]) >= {"a|b"}


def test_representation_mode_trains_and_logs_effective_weights(tmp_path):
    text = spec_text("mgda(on=representation)").replace("rows=20000", "rows=300")
    spec = check_text(text).raise_for_errors().spec
    result = train_mod.train(spec, epochs=2, out_dir=tmp_path, progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    weights = [r["weights"] for r in records if r["type"] == "step"]
    assert all(w["a"] >= 0 and w["b"] >= 0 and w["a"] + w["b"] == pytest.approx(1, abs=1e-3)
               for w in weights)  # MGDA's weights lie on the simplex
    cos = [r["grad_cosine"]["a|b"] for r in records if r["type"] == "epoch"]
    assert len(cos) == 3 and all(-1 <= c <= 1 for c in cos)
    assert (result.run_dir / "losses.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])[
        "weighting"] == "mgda"


def test_gradient_method_state_is_saved_in_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot", lambda *a, **k: None)
    result = train_mod.train(with_weighting(tiny(), "cagrad"), epochs=1, out_dir=tmp_path,
                             progress=False)
    ck = torch.load(result.checkpoint, weights_only=True)
    assert ck["weighting"]["kind"] == "cagrad" and ck["weighting"]["params"]["c"] == 0.5
    assert isinstance(make(with_weighting(tiny(), "pcgrad")), GradientMethod)


# --------------------------------------------------------------------------
# Structure: the registry is the one list; no side channels on the model
# --------------------------------------------------------------------------

def test_the_implementations_are_keyed_by_exactly_the_registry_methods():
    from mtl_dsl.training.weighting.methods import IMPLEMENTATIONS

    assert set(IMPLEMENTATIONS) == set(reg.WEIGHTINGS)


@pytest.mark.parametrize("kind", list(reg.WEIGHTINGS))
def test_every_registry_method_has_an_implementation_of_its_family(kind):
    from mtl_dsl.training.weighting.base import Weighting
    from mtl_dsl.training.weighting.methods import IMPLEMENTATIONS

    found = IMPLEMENTATIONS[kind]
    if reg.WEIGHTINGS[kind].family == "loss":
        assert isinstance(found, type) and issubclass(found, Weighting)
    else:
        assert callable(found) and found.__module__ == aggregators.__name__


def test_representation_balancing_writes_nothing_on_the_model():
    spec = tiny()
    model, _, forward = model_and_losses(spec)
    scheme = build("pcgrad", reg.PcgradWeighting(on="representation"), ["a", "b"])
    scheme.attach(groups(model))
    before = dict(vars(model))
    keep = scheme.keeps()
    assert keep == groups(model).representations and keep
    scheme.step(*forward(keep)).backward()
    assert vars(model).keys() == before.keys()
    assert all(vars(model)[k] is v for k, v in before.items())
    with pytest.raises(RuntimeError, match="did not keep"):
        scheme.step(*forward(()))  # the trace is explicit: no kept outputs, no balancing


def test_param_groups_follow_the_graph():
    spec = tiny()
    model, _, _ = model_and_losses(spec)
    g = groups(model)
    assert [id(p) for p in g.shared] == [id(p) for p in model.shared_parameters()]
    assert [id(p) for p in g.last_shared] == [id(p) for p in model.last_shared_parameters()]
    assert set(g.tasks) == {"a", "b"}
    shared = {id(p) for p in g.shared}
    assert all(id(p) not in shared for ps in g.tasks.values() for p in ps)
