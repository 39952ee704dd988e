"""HoME's feature gate (docs/architectures.md, "HoME"): each expert reads x * 2 sigmoid(x A_i B_i)
with its own rank-r (LoRA) A_i, B_i. Checked per sample against the equation with the
compiled model's weights, for expert groups (batched) and towers (one MLP); plus the size
estimate, the diagram and the bounds."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from conftest import ROOT
from mtl_dsl.api import check_file, check_text
from mtl_dsl.language.size import model_size
from mtl_dsl.model.blocks import MLP, ExpertGroup, FeatureGate
from mtl_dsl.tools.drawing.graphviz import to_digraph
from test_columns import block, fusion_row, per_row
from test_oracle import batch_x, compiled, experts_of, head_of, perturb, tower_of

GATED = """
model home_fg
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
experts m_s[2] = mlp(x, 8, norm=batch, act=silu, feature_gate=3)
experts m_g = mlp(x, 8, 8, norm=batch, act=silu, feature_gate=2)
gate g_meta = fusion(x, residual=gated) over m_g, m_s
tower t_a = mlp(g_meta, 4, feature_gate=2)
tower t_b = mlp(g_meta, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""


def gate_row(down: torch.Tensor, up: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
    """Expert i's gated input for one sample: x * 2 sigmoid((A_i x) B_i), A_i = rows i*r..."""
    r = up.shape[1]
    a = down[i * r:(i + 1) * r] @ x  # (r,)
    return x * 2.0 * torch.sigmoid(a @ up[i])  # (in,)


def gated_outputs(model, group: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Each textbook expert on its own per-sample gated input: (B, D) each."""
    fg = model.experts[group].feature
    outs = []
    for i, expert in enumerate(experts_of(model, group)):
        xi = torch.stack([gate_row(fg.down.weight, fg.up, x[r], i) for r in range(len(x))])
        outs.append(expert(xi))
    return outs


def reference(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    meta_e = [*gated_outputs(model, "m_g", x), *gated_outputs(model, "m_s", x)]
    g = block(model, "g_meta")
    meta = per_row(lambda r, ex: fusion_row(g, x[r], ex, 1), meta_e)
    fg = model.towers["t_a"].net[0]
    meta_a = torch.stack([gate_row(fg.down.weight, fg.up, meta[r], 0) for r in range(len(x))])
    return {"a": head_of(model, "a")(tower_of(model, "t_a")(meta_a)),
            "b": head_of(model, "b")(tower_of(model, "t_b")(meta))}


@pytest.mark.parametrize("train", [True, False])
def test_feature_gated_experts_and_towers_match_the_equation(train: bool) -> None:
    model = compiled(GATED)
    perturb(model)  # B_i off zero: the gates are no longer all 1
    model.train(train)
    batch = batch_x(12)
    out, ref = model(batch), reference(model, batch["x"])
    assert_close(out["a"], ref["a"])
    assert_close(out["b"], ref["b"])


def test_the_gate_starts_at_one_and_the_oracle_sees_it_move() -> None:
    """B starts at zero (2 sigmoid(0) = 1: the expert reads x); once B moves, the output moves."""
    model = compiled(GATED).eval()
    x = batch_x(12)
    before = model(x)["a"]
    plain = compiled(GATED.replace(", feature_gate=3", "").replace(", feature_gate=2", ""))
    state = {k.replace("towers.t_a.net.1", "towers.t_a.net.0"): v
             for k, v in model.state_dict().items()
             if ".feature." not in k and not k.startswith("towers.t_a.net.0")}
    plain.load_state_dict(state, strict=True)
    assert_close(before, plain.eval()(x)["a"])
    with torch.no_grad():
        model.experts["m_s"].feature.up.add_(1.0)
    assert not torch.allclose(before, model(x)["a"])


def test_a_gate_without_layers_gives_each_expert_its_gated_input() -> None:
    torch.manual_seed(0)
    group = ExpertGroup(5, 3, feature_gate=2)
    net = MLP(5, feature_gate=2)
    with torch.no_grad():
        group.feature.up.normal_()
        net.net[0].up.normal_()
    x = torch.randn(4, 5)
    out = group(x)
    assert out.shape == (4, 3, 5)
    for r in range(4):
        for i in range(3):
            assert_close(out[r, i], gate_row(group.feature.down.weight, group.feature.up, x[r], i))
        assert_close(net(x)[r], gate_row(net.net[0].down.weight, net.net[0].up, x[r], 0))
    assert isinstance(net.net[0], FeatureGate)


def test_the_size_estimate_counts_the_gates() -> None:
    checked = check_text(GATED).raise_for_errors()
    model = compiled(GATED)
    assert model_size(checked.spec, checked.graph).params == model.param_count()
    home = check_file(ROOT / "specs" / "home.mtl").raise_for_errors()
    shipped = compiled((ROOT / "specs" / "home.mtl").read_text(),
                       vocab_sizes={"user": 7, "item": 7, "category": 7})
    tables = sum(p.numel() for p in shipped.embeddings.parameters())  # sized by the data
    assert model_size(home.spec, home.graph).params == shipped.param_count() - tables


def test_the_diagram_labels_the_feature_gate() -> None:
    checked = check_file(ROOT / "specs" / "home.mtl").raise_for_errors()
    assert "feature gate r=4" in to_digraph(checked.spec, checked.graph).source


@pytest.mark.parametrize("bad,code", [("feature_gate=-1", "E301"), ("feature_gate=5000", "E301")])
def test_the_rank_is_bounded(bad: str, code: str) -> None:
    result = check_text(GATED.replace("feature_gate=3", bad))
    assert any(d.code.startswith(code) and "feature_gate" in d.message
               for d in result.diagnostics), [str(d) for d in result.diagnostics]


def test_pepnet_towers_refuse_a_feature_gate() -> None:
    text = GATED.replace("tower t_b = mlp(g_meta, 4)",
                         "tower t_b = pepnet(g_meta, 4, by=x, feature_gate=2)")
    result = check_text(text)
    assert any(d.code == "E301" and "feature_gate" in d.message for d in result.diagnostics)


def test_feature_gated_critics_are_counted_and_need_layers() -> None:
    """MetaHeac's critics are an expert group too: gated with widths, refused without."""
    text = (ROOT / "specs" / "metaheac.mtl").read_text()
    gated = text.replace("critic=mlp(16)", "critic=mlp(16, feature_gate=2)")
    checked = check_text(gated).raise_for_errors()
    model = compiled(gated, vocab_sizes={"user": 7, "item": 7, "category": 7})
    tables = sum(p.numel() for p in model.embeddings.parameters())
    assert model_size(checked.spec, checked.graph).params == model.param_count() - tables
    bad = check_text(text.replace("critic=mlp(16)", "critic=mlp(feature_gate=2)"))
    assert any(d.code == "E301" and "needs hidden widths" in d.message for d in bad.diagnostics)
