"""Oracle tests: compiled models compute what the published equations say.

Each reference below is written plainly from ARCHITECTURES.md section 1 (one
nn.Sequential per expert, per-expert Python loops, textbook layers) and gets the
compiled model's weights copied in; the two must then agree on the same batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from mtl_dsl.model.blocks import MLP, ExpertGroup
from mtl_dsl.model.compiler import CompiledModel, compile_model
from mtl_dsl.language.registry import MLPParams
from mtl_dsl.api import check_text

B = 32
ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "none": nn.Identity}


def compiled(text: str, seed: int = 0, **kw) -> CompiledModel:
    checked = check_text(text).raise_for_errors()
    torch.manual_seed(seed)
    return compile_model(checked.spec, checked.graph, **kw)


def perturb(model: nn.Module) -> None:
    """Move every parameter and norm statistic off its init, so a wrong copy shows."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.5 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)


# --------------------------------------------------------------------------
# Textbook pieces, with the compiled model's weights copied in
# --------------------------------------------------------------------------

def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _batch_norm(width: int, bn: nn.BatchNorm1d, rows: slice) -> nn.BatchNorm1d:
    ref = nn.BatchNorm1d(width)
    with torch.no_grad():
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(ref, attr).copy_(getattr(bn, attr)[rows])
    return ref


def _layer_norm(weight: torch.Tensor, bias: torch.Tensor) -> nn.LayerNorm:
    ref = nn.LayerNorm(weight.shape[0])
    with torch.no_grad():
        ref.weight.copy_(weight)
        ref.bias.copy_(bias)
    return ref


def experts_of(model: CompiledModel, name: str) -> list[nn.Sequential]:
    """Expert group `name` as one textbook nn.Sequential per expert (in the model's mode)."""
    group: ExpertGroup = model.experts[name.replace(".", "-")]
    p: MLPParams = model.spec.node(name).net
    return [_one_expert(group, p, i).train(model.training) for i in range(group.count)]


def _one_expert(group: ExpertGroup, p: MLPParams, i: int) -> nn.Sequential:
    if not p.widths:
        return nn.Sequential()
    h1 = p.widths[0]
    weights = [(group.first.weight[i * h1:(i + 1) * h1], group.first.bias[i * h1:(i + 1) * h1])]
    # deeper layers: weight (n, in, out), bias (n, 1, out)
    weights += [(layer.weight[i].T, layer.bias[i, 0]) for layer in group.deep]
    layers: list[nn.Module] = []
    for j, ((w, b), width) in enumerate(zip(weights, p.widths)):
        layers.append(_linear(w, b))
        if p.norm == "batch":
            layers.append(_batch_norm(width, group.norms[j].bn, slice(i * width, (i + 1) * width)))
        elif p.norm == "layer":
            layers.append(_layer_norm(group.norms[j].weight[i], group.norms[j].bias[i]))
        layers += [ACT[p.act](), nn.Dropout(p.dropout)]
    return nn.Sequential(*layers)


def tower_of(model: CompiledModel, name: str) -> nn.Sequential:
    block: MLP = model.towers[name.replace(".", "-")]
    p: MLPParams = model.spec.node(name).net
    norms = [m for m in block.net if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]
    layers: list[nn.Module] = []
    for j, lin in enumerate(block.linears):
        layers.append(_linear(lin.weight, lin.bias))
        if p.norm == "batch":
            layers.append(_batch_norm(lin.out_features, norms[j], slice(None)))
        elif p.norm == "layer":
            layers.append(_layer_norm(norms[j].weight, norms[j].bias))
        layers += [ACT[p.act](), nn.Dropout(p.dropout)]
    return nn.Sequential(*layers).train(model.training)


def gate_of(model: CompiledModel, name: str):
    """g(x) = softmax(W x / T)."""
    proj = model.gates[name.replace(".", "-")].proj
    temperature = model.spec.node(name).params.temperature
    w, b = proj.weight.detach().clone(), proj.bias.detach().clone()
    return lambda x: torch.softmax((x @ w.T + b) / temperature, dim=1)


def head_of(model: CompiledModel, task: str):
    proj = model.heads[task].proj
    lin = _linear(proj.weight, proj.bias)
    return lambda h: lin(h).squeeze(-1) if lin.out_features == 1 else lin(h)


def mix(g: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    """sum_i g_i f_i(x), one expert at a time."""
    return sum(g[:, i:i + 1] * outputs[i] for i in range(len(outputs)))


def batch_x(dim: int, seed: int = 1) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(B, dim, generator=torch.Generator().manual_seed(seed))}


# --------------------------------------------------------------------------
# Shared-bottom, MMoE, OMoE
# --------------------------------------------------------------------------

MMOE = """
model mmoe
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
experts e[4] = mlp(x, 16, 12, 8, norm={norm}, act={act})
gate g_a = softmax(x) over e
gate g_b = softmax(x, temperature=0.5) over e
tower t_a = mlp(g_a, 8)
tower t_b = mlp(g_b, 6, 4, act=tanh)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""


def mmoe_reference(model: CompiledModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """y_k = tower_k( sum_i softmax(W_k x)_i f_i(x) ), one gate per task."""
    f = [expert(x) for expert in experts_of(model, "e")]
    out = {}
    for task, gate, tower in (("a", "g_a", "t_a"), ("b", "g_b", "t_b")):
        g = gate_of(model, gate)(x)
        out[task] = head_of(model, task)(tower_of(model, tower)(mix(g, f)))
    return out


@pytest.mark.parametrize("norm,act", [("none", "relu"), ("batch", "gelu"), ("layer", "tanh")])
def test_mmoe_matches_reference(norm: str, act: str) -> None:
    model = compiled(MMOE.format(norm=norm, act=act))
    perturb(model)
    batch = batch_x(12)
    for train in (True, False):  # batch statistics, then running statistics
        model.train(train)
        out, ref = model(batch), mmoe_reference(model, batch["x"])
        assert_close(out["a"], ref["a"])
        assert_close(out["b"], ref["b"])


def test_mmoe_reference_is_sensitive() -> None:
    """The oracle can fail: a model with other weights does not match the reference."""
    model, other = compiled(MMOE.format(norm="none", act="relu")), \
        compiled(MMOE.format(norm="none", act="relu"), seed=1)
    batch = batch_x(12)
    ref = mmoe_reference(other, batch["x"])
    assert not torch.allclose(model(batch)["a"], ref["a"])


OMOE = """
model omoe
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
experts e[3] = mlp(x, 10)
gate g = softmax(x) over e
tower t_a = mlp(g, 8)
tower t_b = mlp(g, 8)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""


def test_omoe_matches_reference() -> None:
    """One gate shared by all tasks: y_k = tower_k( sum_i g(x)_i f_i(x) )."""
    model = compiled(OMOE).eval()
    x = batch_x(12)["x"]
    f = [expert(x) for expert in experts_of(model, "e")]
    mixed = mix(gate_of(model, "g")(x), f)
    out = model({"x": x})
    for task in ("a", "b"):
        assert_close(out[task], head_of(model, task)(tower_of(model, f"t_{task}")(mixed)))


SHARED_BOTTOM = """
model sb
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
experts bottom = mlp(x, 16, 8)
tower t_a = mlp(bottom, 8)
tower t_b = mlp(bottom, 4)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""


def test_shared_bottom_matches_reference() -> None:
    """y_k = tower_k(bottom(x)); the one-expert group is read as (B, D)."""
    model = compiled(SHARED_BOTTOM).eval()
    x = batch_x(12)["x"]
    (bottom,) = experts_of(model, "bottom")
    h = bottom(x)
    out = model({"x": x})
    for task in ("a", "b"):
        assert_close(out[task], head_of(model, task)(tower_of(model, f"t_{task}")(h)))


# --------------------------------------------------------------------------
# CGC and PLE
# --------------------------------------------------------------------------

def extraction(levels: int, kind: str = "ple") -> str:
    level_arg = f"levels={levels}, " if kind == "ple" else ""
    return f"""
model {kind}
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
extract p = {kind}(x, {level_arg}specific=2, shared=3, tasks=[a, b], expert=mlp(16, 8))
tower t_a = mlp(p.a, 8)
tower t_b = mlp(p.b, 8)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""


def ple_reference(model: CompiledModel, x: torch.Tensor, levels: int) -> dict[str, torch.Tensor]:
    """PLE as published: at level j task k's experts and gate read g_k^(j-1), the shared
    experts and shared gate read g_s^(j-1); S_k = [E_k..., E_s...]; the shared gate (all
    levels but the last) mixes every expert of the level."""
    g = {"a": x, "b": x}
    g_shared = x
    for j in range(1, levels + 1):
        shared = [f(g_shared) for f in experts_of(model, f"p.l{j}.shared")]
        specific = {k: [f(g[k]) for f in experts_of(model, f"p.l{j}.{k}")] for k in g}
        nxt = {k: mix(gate_of(model, f"p.l{j}.gate_{k}")(g[k]), specific[k] + shared)
               for k in g}
        if j < levels:
            everyone = specific["a"] + specific["b"] + shared
            g_shared = mix(gate_of(model, f"p.l{j}.gate_shared")(g_shared), everyone)
        g = nxt
    return {k: head_of(model, k)(tower_of(model, f"t_{k}")(g[k])) for k in g}


def test_cgc_matches_reference() -> None:
    """CGC: g_k(x) = softmax(W_k x) . [E_k(x), E_s(x)]; no shared gate."""
    model = compiled(extraction(1, "cgc")).eval()
    perturb(model)
    x = batch_x(12)["x"]
    assert "p.l1.gate_shared" not in model.spec.index()
    out, ref = model({"x": x}), ple_reference(model, x, levels=1)
    assert_close(out["a"], ref["a"])
    assert_close(out["b"], ref["b"])


def test_ple_two_levels_matches_reference() -> None:
    model = compiled(extraction(2)).eval()
    perturb(model)
    x = batch_x(12)["x"]
    out, ref = model({"x": x}), ple_reference(model, x, levels=2)
    assert_close(out["a"], ref["a"])
    assert_close(out["b"], ref["b"])


# --------------------------------------------------------------------------
# Sparse features (a shared table), norms and dropout in eval mode
# --------------------------------------------------------------------------

SPARSE = """
model sparse
data csv("{path}")
feature u = sparse(vocab=20, dim=4)
feature v = sparse(dim=4, share=u)
feature w = sparse(vocab=10, dim=3)
feature d = dense(5)
label y1, y3
input x = concat(u, d, v, w)
experts e[3] = mlp(x, 16, 8, norm=batch, dropout=0.2)
gate g_a = softmax(x, temperature=2.0) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 8, norm=layer, act=gelu, dropout=0.3)
tower t_b = mlp(g_b, 8, dropout=0.1)
task a: binary(label=y1) from t_a
task b: multiclass(label=y3, classes=3) from t_b
"""


@pytest.fixture
def sparse_text(tmp_path: Path) -> str:
    columns = ["u", "v", "w", *[f"d_{i}" for i in range(5)], "y1", "y3"]
    path = tmp_path / "x.csv"
    path.write_text(",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n")
    return SPARSE.format(path=path.as_posix())


def sparse_batch(seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"u": torch.randint(0, 20, (B,), generator=g),
            "v": torch.randint(0, 20, (B,), generator=g),
            "w": torch.randint(0, 10, (B,), generator=g),
            "d": torch.randn(B, 5, generator=g)}


def test_sparse_features_norms_dropout_eval(sparse_text: str) -> None:
    model = compiled(sparse_text).eval()
    perturb(model)
    batch = sparse_batch()
    u_table = nn.Embedding.from_pretrained(model.embeddings.rows("u").detach().clone())
    w_table = nn.Embedding.from_pretrained(model.embeddings.rows("w").detach().clone())
    x = torch.cat([u_table(batch["u"]), batch["d"], u_table(batch["v"]), w_table(batch["w"])], 1)
    f = [expert(x) for expert in experts_of(model, "e")]
    out = model(batch)
    for task, gate in (("a", "g_a"), ("b", "g_b")):
        h = tower_of(model, f"t_{task}")(mix(gate_of(model, gate)(x), f))
        assert_close(out[task], head_of(model, task)(h))
    assert out["b"].shape == (B, 3)


def test_dropout_is_active_in_train_mode_only(sparse_text: str) -> None:
    model = compiled(sparse_text)
    batch = sparse_batch()
    model.train()
    assert not torch.allclose(model(batch)["a"], model(batch)["a"])
    model.eval()
    assert_close(model(batch)["a"], model(batch)["a"])
