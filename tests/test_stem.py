"""STEM (Su et al., AAAI 2024): all-forward, task-specific-backward gates against a
per-sample reference of docs/architectures.md's equations, with the model's own weights."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from mtl_dsl.api import check_text
from mtl_dsl.model.compiler import CompiledModel, compile_model

B = 9
SPEC = """
model stem
data synthetic.correlated(rows=100, dim=9)
feature s = dense(3, column=x)
feature a = dense(3, column=x, start=3)
feature b = dense(3, column=x, start=6)
label y1, y2
experts shared[2] = mlp(s, 5)
experts own_a = mlp(a, 5)
experts own_b[2] = mlp(b, 5)
input ga = concat(s, a)
input gb = concat(s, b)
gate g_a = softmax(ga{stop_a}) over shared, own_a, own_b
gate g_b = softmax(gb, stop=[own_a]) over shared, own_a, own_b
tower t_a = mlp(g_a, 4)
tower t_b = mlp(g_b, 4)
task ta: binary(label=y1) from t_a
task tb: regression(label=y2) from t_b
"""


def compiled(stop_a: str = ", stop=[own_b]") -> CompiledModel:
    checked = check_text(SPEC.format(stop_a=stop_a)).raise_for_errors()
    torch.manual_seed(0)
    return compile_model(checked.spec, checked.graph)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {k: torch.randn(B, 3, generator=g) for k in ("s", "a", "b")}


def reference(model: CompiledModel, b: dict) -> torch.Tensor:
    """Row by row: w = softmax(W [s ; a] + c); g_a = sum_i w_i f_i over the 5 experts."""
    env = model.trace(b)
    gate = model.gates["g_a"].proj
    rows = []
    for r in range(B):
        experts = [*env["shared"][r], env["own_a"][r], *env["own_b"][r]]
        w = torch.softmax(gate.weight @ torch.cat([b["s"][r], b["a"][r]]) + gate.bias, 0)
        rows.append(sum(w[i] * experts[i] for i in range(5)))
    return torch.stack(rows)


def test_the_forward_mixes_every_expert() -> None:
    model = compiled().eval()
    b = batch()
    with torch.no_grad():
        assert_close(model.trace(b)["g_a"], reference(model, b))
        plain = compiled(stop_a="").eval()
        assert_close(plain.trace(b)["g_a"], model.trace(b)["g_a"])


def _grads(model: CompiledModel, task: str) -> dict[str, bool]:
    model.zero_grad()
    model(batch())[task].sum().backward()
    return {g: any(p.grad is not None and bool(p.grad.any())
                   for p in model.experts[g].parameters())
            for g in ("shared", "own_a", "own_b")}


def test_a_task_trains_the_shared_experts_and_its_own_only() -> None:
    model = compiled()
    assert _grads(model, "ta") == {"shared": True, "own_a": True, "own_b": False}
    assert _grads(model, "tb") == {"shared": True, "own_a": False, "own_b": True}
    plain = compiled(stop_a="")  # without stop=, the other task's experts train too
    assert _grads(plain, "ta") == {"shared": True, "own_a": True, "own_b": True}


def test_stopping_a_group_the_gate_does_not_mix_is_diagnosed() -> None:
    diags = check_text(SPEC.format(stop_a=", stop=[own_c]")).diagnostics
    assert [d.code for d in diags if d.severity == "error"] == ["E433"]
