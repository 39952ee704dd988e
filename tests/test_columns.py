"""Task-column interactions (cross-stitch, AdaTT, HoME): the `columns` template's expansion,
the `stitch` and `fusion` gates against per-sample references of docs/architectures.md's
equations with the model's own weights, and the front end's view of them (size, diagram,
errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from conftest import ROOT
from mtl_dsl.api import check_file, check_text
from mtl_dsl.language.size import model_size
from mtl_dsl.model.interactions import StitchGate
from mtl_dsl.tools.drawing.graphviz import to_digraph
from test_oracle import ACT, batch_x, compiled, experts_of, head_of, perturb, tower_of

ACT.setdefault("silu", nn.SiLU)  # HoME's Swish experts, for test_oracle's textbook experts

STITCH = """
model cs
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
extract c = columns(x, levels=2, expert=mlp(10, 8), tasks=[a, b], mix=cross_stitch, own=0.8)
tower t_a = mlp(c.a, 6)
tower t_b = mlp(c.b, 6)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""

ADATT = """
model adatt
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
extract d = columns(x, levels=2, specific={specific}, shared=1, expert=mlp(8, norm={norm}),
                    tasks=[a, b], mix=adatt, residual={residual})
tower t_a = mlp(d.a, 6)
tower t_b = mlp(d.b, 6)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""

HOME = """
model home
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
experts m_s[2] = mlp(x, 8, norm=batch, act=silu)
experts m_g = mlp(x, 8, norm=batch, act=silu)
gate g_meta = fusion(x, residual=gated) over m_g, m_s
experts e_a[2] = mlp(g_meta, 6, norm=batch, act=silu)
experts e_b = mlp(g_meta, 6, norm=batch, act=silu)
gate g_a = fusion(g_meta, residual=gated, temperature=0.5) over e_a, e_b
gate g_b = fusion(g_meta, residual=gated) over e_b, e_a
tower t_a = mlp(g_a, 4)
tower t_b = mlp(g_b, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""


def block(model, name: str):
    return model.gates[name.replace(".", "-")]


def outputs_of(model, group: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Each expert of a group on its input, one nn.Sequential at a time: (B, D) each."""
    return [expert(x) for expert in experts_of(model, group)]


def stitch_row(alpha: torch.Tensor, columns: list[torch.Tensor]) -> torch.Tensor:
    """x_k = sum_j alpha_kj h_j for one sample, the own column first."""
    return sum(float(alpha[j]) * columns[j] for j in range(len(columns)))


def fusion_row(gate, x: torch.Tensor, experts: list[torch.Tensor], m: int) -> torch.Tensor:
    """One sample through AdaTT's/HoME's fusion unit (docs/architectures.md):
    sum_i softmax(W x / T)_i E_i plus the residual of the own m experts."""
    w, b = gate.gate.proj.weight, gate.gate.proj.bias
    g = torch.softmax((w @ x + b) / gate.gate.temperature, 0)
    out = sum(g[i] * experts[i] for i in range(len(experts)))
    own = experts[:m]
    if gate.residual == "linear":
        out = out + (own[0] if m == 1 else sum(gate.v[i] * own[i] for i in range(m)))
    elif gate.residual == "gated":
        u = gate.self_gate.weight @ x + gate.self_gate.bias
        out = out + (torch.sigmoid(u[0]) * own[0] if m == 1
                     else sum(torch.softmax(u, 0)[i] * own[i] for i in range(m)))
    return out


def per_row(fn, *columns: list[torch.Tensor]) -> torch.Tensor:
    """fn applied to each sample r of the given per-expert (B, D) outputs, stacked."""
    rows = columns[0][0].shape[0]
    return torch.stack([fn(r, *[[e[r] for e in c] for c in columns]) for r in range(rows)])


def stitch_reference(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    prev = {"a": x, "b": x}
    for level in (1, 2):
        h = {t: outputs_of(model, f"c.l{level}.{t}", prev[t])[0] for t in "ab"}
        prev = {}
        for t, other in (("a", "b"), ("b", "a")):
            alpha = block(model, f"c.l{level}.mix_{t}").alpha.detach()
            prev[t] = per_row(lambda r, cols: stitch_row(alpha, cols), [h[t], h[other]])
    return {t: head_of(model, t)(tower_of(model, f"t_{t}")(prev[t])) for t in "ab"}


def test_cross_stitch_matches_reference() -> None:
    model = compiled(STITCH)
    perturb(model)
    batch = batch_x(12)
    out, ref = model(batch), stitch_reference(model, batch["x"])
    assert_close(out["a"], ref["a"])
    assert_close(out["b"], ref["b"])


def test_cross_stitch_starts_near_the_identity_and_the_oracle_can_fail() -> None:
    model = compiled(STITCH)
    assert_close(block(model, "c.l1.mix_a").alpha.detach(), torch.tensor([0.8, 0.2]))
    other = compiled(STITCH, seed=1)
    batch = batch_x(12)
    assert not torch.allclose(model(batch)["a"], stitch_reference(other, batch["x"])["a"])
    assert_close(StitchGate(4, 2, 0.6).alpha.detach(), torch.tensor([0.3, 0.3, 0.2, 0.2]))


def adatt_reference(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """AdaTT-sp: per level, task experts on x_k, shared experts on x_s; each task's fusion
    over [own, other task's, shared]; the shared module's over [shared, a, b] below the top."""
    prev = {"a": x, "b": x, "shared": x}
    for level in (1, 2):
        e = {t: outputs_of(model, f"d.l{level}.{t}", prev[t]) for t in ("a", "b", "shared")}
        nxt = {}
        readers = ("a", "b", "shared") if level == 1 else ("a", "b")
        for t in readers:
            order = [t, *(c for c in ("a", "b", "shared") if c != t)]
            listed = [out for c in order for out in e[c]]
            gate, m = block(model, f"d.l{level}.mix_{t}"), len(e[t])
            nxt[t] = per_row(lambda r, ex: fusion_row(gate, prev[t][r], ex, m), listed)
        prev = {**nxt, "shared": nxt.get("shared", prev["shared"])}
    return {t: tower_of(model, f"t_{t}")(prev[t]) for t in "ab"}


@pytest.mark.parametrize("specific,norm,residual", [(2, "none", "linear"), (1, "none", "linear"),
                                                    (2, "batch", "gated"), (1, "layer", "none")])
def test_adatt_matches_reference(specific: int, norm: str, residual: str) -> None:
    model = compiled(ADATT.format(specific=specific, norm=norm, residual=residual))
    perturb(model)
    batch = batch_x(12)
    for train in (True, False):
        model.train(train)
        trace, ref = model.trace(batch), adatt_reference(model, batch["x"])
        assert_close(trace["t_a"], ref["a"])
        assert_close(trace["t_b"], ref["b"])


def home_reference(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Normalised experts, the meta gate over [group, shared], task gates over [own, other]
    with self-gates (sigmoid for one own expert, softmax for several)."""
    meta_e = [*outputs_of(model, "m_g", x), *outputs_of(model, "m_s", x)]
    g = block(model, "g_meta")
    meta = per_row(lambda r, ex: fusion_row(g, x[r], ex, 1), meta_e)
    e = {t: outputs_of(model, f"e_{t}", meta) for t in "ab"}
    out = {}
    for t, other in (("a", "b"), ("b", "a")):
        gate = block(model, f"g_{t}")
        mixed = per_row(lambda r, ex: fusion_row(gate, meta[r], ex, len(e[t])), e[t] + e[other])
        out[t] = head_of(model, t)(tower_of(model, f"t_{t}")(mixed))
    return out


def test_home_matches_reference() -> None:
    model = compiled(HOME)
    perturb(model)
    batch = batch_x(12)
    for train in (True, False):
        model.train(train)
        out, ref = model(batch), home_reference(model, batch["x"])
        assert_close(out["a"], ref["a"])
        assert_close(out["b"], ref["b"])


def test_the_template_expands_into_ordinary_experts_and_gates() -> None:
    spec = check_text(ADATT.format(specific=2, norm="none", residual="linear")
                      ).raise_for_errors().spec
    assert [e.name for e in spec.experts] == ["d.l1.a", "d.l1.b", "d.l1.shared", "d.l2.a",
                                               "d.l2.b", "d.l2.shared"]
    gates = {g.name: [r.name for r in g.over] for g in spec.gates}
    assert gates["d.l1.mix_b"] == ["d.l1.b", "d.l1.a", "d.l1.shared"]
    assert gates["d.l1.mix_shared"] == ["d.l1.shared", "d.l1.a", "d.l1.b"]
    assert "d.l2.mix_shared" not in gates
    assert spec.node("d.l2.shared").input.name == "d.l1.mix_shared"
    assert spec.resolve("d.a") == "d.l2.mix_a"


@pytest.mark.parametrize("text", [STITCH, HOME, ADATT.format(specific=2, norm="batch",
                                                              residual="gated")])
def test_the_size_estimate_counts_every_interaction_parameter(text: str) -> None:
    checked = check_text(text).raise_for_errors()
    model = compiled(text)
    assert model_size(checked.spec, checked.graph).params == model.param_count()


@pytest.mark.parametrize("name,shown", [("cross_stitch", "cross-stitch over 2"),
                                        ("adatt", "linear residual of a"),
                                        ("home", "self-gate residual of e_click")])
def test_the_diagram_shows_the_interaction(name: str, shown: str) -> None:
    checked = check_file(ROOT / "specs" / f"{name}.mtl").raise_for_errors()
    assert shown in to_digraph(checked.spec, checked.graph).source


def test_every_interaction_parameter_learns() -> None:
    """Cross-stitch's constants, the fusion gate and its residual weights all get gradients."""
    for text, names in ((STITCH, ("c.l1.mix_a", "c.l2.mix_b")),
                        (ADATT.format(specific=2, norm="none", residual="linear"),
                         ("d.l1.mix_a", "d.l1.mix_shared")), (HOME, ("g_meta", "g_b"))):
        model = compiled(text)
        out = model(batch_x(12))
        sum(y.square().mean() for y in out.values()).backward()
        for name in names:
            for pname, p in block(model, name).named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, (name, pname)
