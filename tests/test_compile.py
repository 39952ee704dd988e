"""The compiler: shapes, parameter groups read from the graph, gradients, summary, init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mtl_dsl.model.blocks import Embeddings, ExpertGroup
from mtl_dsl.model.compiler import CompiledModel, compile_model
from mtl_dsl.model.steps import Concat, Mix
from mtl_dsl.api import check_text

B = 16
HEAD = """
data synthetic.correlated(rows=100, dim=12)
feature x = dense(12)
label y1, y2
"""

MMOE = HEAD + """
experts e[4] = mlp(x, 16, 8)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 8)
tower t_b = mlp(g_b, 8)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""

OMOE = HEAD + """
experts e[4] = mlp(x, 8)
gate g = softmax(x) over e
tower t_a = mlp(g, 8)
tower t_b = mlp(g, 8)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""

SHARED_BOTTOM = HEAD + """
experts bottom = mlp(x, 16, 8)
tower t_a = mlp(bottom, 8)
tower t_b = mlp(bottom, 4)
task a: regression(label=y1) from t_a
task b: multiclass(label=y2, classes=4) from t_b
"""

SHARED_TOWER = HEAD + """
tower base = mlp(x, 16, 8)
tower t_a = mlp(base, 8)
tower t_b = mlp(base, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""

PLE = HEAD + """
extract p = ple(x, levels=2, specific=2, shared=2, tasks=[a, b], expert=mlp(16, 8))
tower t_a = mlp(p.a, 8)
tower t_b = mlp(p.b, 8)
task a: regression(label=y1) from t_a
task b: binary(label=y2) from t_b
"""


def compiled(text: str, seed: int = 0, **kw) -> CompiledModel:
    checked = check_text(text).raise_for_errors()
    torch.manual_seed(seed)
    return compile_model(checked.spec, checked.graph, **kw)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def params_of(module: nn.Module) -> set[int]:
    return ids(module.parameters())


def dense_batch(dim: int = 12) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(B, dim, generator=torch.Generator().manual_seed(0))}


SPARSE = """
data csv("{path}")
feature u = sparse(vocab=20, dim=4)
feature v = sparse(dim=4, share=u)
feature w = sparse(vocab=10, dim=3)
feature k = sparse(vocab="auto", dim=3)
feature d = dense(5)
label y1, y2
input x = concat(u, d, v, w, k)
experts e[3] = mlp(x, 16, 8, norm=layer)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 8, norm=batch)
tower t_b = mlp(g_b, 8)
task a: binary(label=y1) from t_a
task b: regression(label=y2) from t_b
"""


@pytest.fixture
def sparse_text(tmp_path: Path) -> str:
    columns = ["u", "v", "w", "k", *[f"d_{i}" for i in range(5)], "y1", "y2"]
    path = tmp_path / "x.csv"
    path.write_text(",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n")
    return SPARSE.format(path=path.as_posix())


def sparse_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = {name: torch.randint(0, vocab, (B,), generator=g)
           for name, vocab in (("u", 20), ("v", 20), ("w", 10), ("k", 7))}
    return {**ids, "d": torch.randn(B, 5, generator=g)}


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------

def test_outputs_have_task_shapes() -> None:
    out = compiled(SHARED_BOTTOM)(dense_batch())
    assert set(out) == {"a", "b"}
    assert out["a"].shape == (B,) and out["b"].shape == (B, 4)
    assert out["a"].dtype == torch.float32


def test_predict_applies_the_output_link() -> None:
    model = compiled(MMOE).eval()
    raw, prob = model(dense_batch()), model.predict(dense_batch())
    torch.testing.assert_close(prob["a"], raw["a"])  # regression: values
    torch.testing.assert_close(prob["b"], torch.sigmoid(raw["b"]))
    assert not prob["b"].requires_grad
    multi = compiled(SHARED_BOTTOM).eval().predict(dense_batch())["b"]
    torch.testing.assert_close(multi.sum(1), torch.ones(B))


def test_init_is_deterministic_under_manual_seed() -> None:
    one, two, other = compiled(PLE, seed=5), compiled(PLE, seed=5), compiled(PLE, seed=6)
    for (name, p), q, r in zip(one.state_dict().items(), two.state_dict().values(),
                               other.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(one.parameters(), other.parameters()))


def test_deepcopy_gets_its_own_plan() -> None:
    import copy
    model = compiled(MMOE).eval()
    twin = copy.deepcopy(model)
    before = model(dense_batch())["a"]
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    torch.testing.assert_close(model(dense_batch())["a"], before)
    torch.testing.assert_close(twin(dense_batch())["a"], torch.zeros(B))


def test_mmoe_gates_are_fused_into_one_step() -> None:
    model = compiled(MMOE)
    mixes = [s for s in model.plan if isinstance(s, Mix)]
    assert [m.names for m in mixes] == [("g_a", "g_b")]
    # the gates keep their own parameters all the same
    assert params_of(model.gates["g_a"]).isdisjoint(params_of(model.gates["g_b"]))


def test_ple_gates_with_different_inputs_are_not_fused() -> None:
    mixes = [s for s in compiled(PLE).plan if isinstance(s, Mix)]
    assert all(len(m.names) == 1 for m in mixes) and len(mixes) == 5


def test_unused_feature_is_not_read() -> None:
    extra = 'feature x = dense(12)\nfeature z = dense(column="x_0")'
    text = MMOE.replace("feature x = dense(12)", extra)
    out = compiled(text)(dense_batch())  # no "z" in the batch
    assert out["a"].shape == (B,)


def test_gate_over_one_expert_passes_it_through() -> None:
    text = HEAD + """
experts bottom = mlp(x, 8)
gate g = softmax(x) over bottom
tower t_a = mlp(g, 4)
tower t_b = mlp(bottom, 4)
task a: regression(label=y1) from t_a
task b: regression(label=y2) from t_b
"""
    model = compiled(text).eval()
    batch = dense_batch()
    h = model.experts["bottom"](batch["x"])  # (B, 1, 8)
    assert h.shape == (B, 1, 8)
    expect = model.heads["a"](model.towers["t_a"](ExpertGroup.squeeze(h)))
    torch.testing.assert_close(model(batch)["a"], expect)


# --------------------------------------------------------------------------
# Expert group block
# --------------------------------------------------------------------------

def test_expert_group_layout_and_per_expert_slices() -> None:
    torch.manual_seed(0)
    group = ExpertGroup(6, 3, (5, 4), act="none")
    x = torch.randn(B, 6)
    out = group(x)
    assert out.shape == (B, 3, 4)
    for i in range(3):
        (w1, b1), (w2, b2) = group.expert_layers(i)
        torch.testing.assert_close(out[:, i], (x @ w1.T + b1) @ w2.T + b2)


# --------------------------------------------------------------------------
# Parameter groups
# --------------------------------------------------------------------------

def test_mmoe_groups_share_experts_not_gates_or_towers() -> None:
    model = compiled(MMOE)
    assert ids(model.shared_parameters()) == params_of(model.experts["e"])
    assert ids(model.last_shared_parameters()) == {id(model.experts["e"].deep[-1].weight)}
    task_a = ids(model.task_parameters("a"))
    assert task_a == params_of(model.gates["g_a"]) | params_of(model.towers["t_a"]) | \
        params_of(model.heads["a"])
    assert task_a.isdisjoint(model.task_parameters("b"))
    everything = ids(model.shared_parameters()) | task_a | ids(model.task_parameters("b"))
    assert everything == ids(model.parameters())


def test_omoe_single_gate_is_shared() -> None:
    model = compiled(OMOE)
    assert params_of(model.gates["g"]) <= ids(model.shared_parameters())
    # a one-layer expert group: its last Linear is the wide first layer
    assert ids(model.last_shared_parameters()) == {id(model.experts["e"].first.weight)}


def test_shared_bottom_groups() -> None:
    model = compiled(SHARED_BOTTOM)
    bottom = model.experts["bottom"]
    assert ids(model.shared_parameters()) == params_of(bottom)
    assert [p.shape for p in model.last_shared_parameters()] == [(1, 16, 8)]  # (n, in, out)
    assert model.last_shared_parameters()[0] is bottom.deep[-1].weight
    assert ids(model.task_parameters("b")) == params_of(model.towers["t_b"]) | \
        params_of(model.heads["b"])


def test_shared_tower_is_last_shared_without_experts() -> None:
    model = compiled(SHARED_TOWER)
    base = model.towers["base"]
    assert ids(model.shared_parameters()) == params_of(base)
    assert model.last_shared_parameters() == [base.linears[-1].weight]


def test_ple_groups_follow_reachability() -> None:
    model = compiled(PLE)
    shared = ids(model.shared_parameters())
    level1 = ["p-l1-a", "p-l1-b", "p-l1-shared"]
    for name in [*level1, "p-l2-shared"]:
        assert params_of(model.experts[name]) <= shared, name
    assert params_of(model.gates["p-l1-gate_shared"]) <= shared
    for name in ("p-l2-a", "p-l2-b"):
        assert params_of(model.experts[name]).isdisjoint(shared)
    assert params_of(model.experts["p-l2-a"]) <= ids(model.task_parameters("a"))
    assert params_of(model.gates["p-l1-gate_a"]) <= ids(model.task_parameters("a"))
    assert model.last_shared_parameters() == [model.experts["p-l2-shared"].last_weight]


def test_unknown_task_for_task_parameters() -> None:
    with pytest.raises(KeyError, match="unknown task 'c'"):
        compiled(MMOE).task_parameters("c")


def test_embedding_groups(sparse_text: str) -> None:
    model = compiled(sparse_text, vocab_sizes={"k": 7})
    tables = ids(model.embedding_parameters())
    assert len(tables) == 2  # one concatenated table per dim (4 and 3)
    assert tables.isdisjoint(model.shared_parameters())
    assert tables <= ids(model.shared_parameters(include_embeddings=True))
    assert ids(model.last_shared_parameters()) == {id(model.experts["e"].deep[-1].weight)}


# --------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------

def test_one_table_per_dim_with_disjoint_owner_rows(sparse_text: str) -> None:
    model = compiled(sparse_text, vocab_sizes={"k": 7})
    emb: Embeddings = model.embeddings
    assert emb.tables["d4"].num_embeddings == 20  # v shares u's rows
    assert emb.tables["d3"].num_embeddings == 10 + 7
    assert {emb.offset["w"], emb.offset["k"]} == {0, 10}
    out = emb.lookup(sparse_batch())
    batch = sparse_batch()
    torch.testing.assert_close(out["k"], emb.rows("k")[batch["k"]])
    torch.testing.assert_close(out["v"], emb.rows("u")[batch["v"]])  # share=u


def test_input_reads_neighbouring_block_features_as_one_slice(sparse_text: str) -> None:
    model = compiled(sparse_text, vocab_sizes={"k": 7})
    (concat,) = [s for s in model.plan if isinstance(s, Concat)]
    # concat(u, d, v, w, k): u, v share the dim-4 block; w, k are neighbours in the dim-3 one
    assert concat.pieces == (("emb/d4", 0, 1), ("d", None, None), ("emb/d4", 1, 2),
                             ("emb/d3", 0, 2))
    batch, env = sparse_batch(), {}
    for step in model.plan[:2]:
        step(batch, env)
    emb = model.embeddings.lookup(batch)
    expect = torch.cat([emb["u"], batch["d"], emb["v"], emb["w"], emb["k"]], 1)
    torch.testing.assert_close(env["x"], expect)


def test_sparse_feature_read_directly_by_a_gate(sparse_text: str) -> None:
    text = sparse_text.replace("gate g_b = softmax(x) over e", "gate g_b = softmax(w) over e")
    model = compiled(text, vocab_sizes={"k": 7}).eval()
    batch = sparse_batch()
    env: dict = {}
    for step in model.plan:
        step(batch, env)
    w = model.embeddings.lookup(batch)["w"]
    torch.testing.assert_close(env["w"], w)
    weights = torch.softmax(model.gates["g_b"].proj(w), -1)
    torch.testing.assert_close(env["g_b"], (weights.unsqueeze(-1) * env["e"]).sum(1))


def test_auto_vocabulary_needs_a_size(sparse_text: str) -> None:
    with pytest.raises(ValueError, match="feature 'k'"):
        compiled(sparse_text)


def test_vocab_sizes_override_the_spec(sparse_text: str) -> None:
    model = compiled(sparse_text, vocab_sizes={"k": 7, "u": 50})
    assert model.embeddings.tables["d4"].num_embeddings == 50


# --------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------

@pytest.mark.parametrize("text", [MMOE, OMOE, SHARED_BOTTOM, PLE],
                         ids=["mmoe", "omoe", "shared_bottom", "ple"])
def test_every_parameter_gets_a_gradient(text: str) -> None:
    model = compiled(text)
    out = model(dense_batch())
    sum(y.square().mean() for y in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_sparse_model_gradients_reach_tables(sparse_text: str) -> None:
    model = compiled(sparse_text, vocab_sizes={"k": 7})
    out = model(sparse_batch())
    sum(y.square().mean() for y in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def test_summary_rows(sparse_text: str) -> None:
    model = compiled(sparse_text, vocab_sizes={"k": 7})
    rows = {r["name"]: r for r in model.summary()}
    assert rows["e"]["shape"] == "(B, 3, 8)" and rows["e"]["kind"] == "expert"
    assert rows["e"]["shared_by"] == ["a", "b"] and rows["g_a"]["shared_by"] == ["a"]
    assert rows["x"]["shape"] == "(B, 19)"  # 4 + 5 + 4 + 3 + 3
    assert rows["emb:u"]["shape"] == "(20, 4)" and rows["emb:u"]["params"] == 80
    assert rows["a"]["shape"] == "(B,)" and rows["a"]["params"] == 9
    assert sum(r["params"] for r in rows.values()) == model.param_count()


def test_summary_of_one_expert_group_and_multiclass() -> None:
    rows = {r["name"]: r for r in compiled(SHARED_BOTTOM).summary()}
    assert rows["bottom"]["shape"] == "(B, 8)"
    assert rows["b"]["shape"] == "(B, 4)"
    assert rows["bottom"]["params"] == 12 * 16 + 16 + 16 * 8 + 8


# ---- node kinds dispatch through one table per stage ------------------------

def test_every_stage_table_covers_every_node_kind() -> None:
    from mtl_dsl.language.graph import KINDS
    from mtl_dsl.model.compiler import BUILD, PLAN, SHAPE

    for table in (BUILD, PLAN, SHAPE):
        assert tuple(table) == KINDS


def test_metaheac_critics_and_their_uses_are_kinds_of_their_own(root: Path) -> None:
    from mtl_dsl.api import check_file

    checked = check_file(root / "specs" / "metaheac.mtl")
    graph = checked.graph
    (critics,) = [c.name for c in checked.spec.critics]
    uses = [n for n in graph.g if graph.kind(n) == "critic_use"]
    assert graph.kind(critics) == "critics" and critics in graph.shared
    assert sorted(graph.critic_use_of(u) for u in uses) == \
        sorted((critics, t) for t in checked.spec.critics[0].tasks)
    assert not set(uses) & set(graph.shared)  # a use owns no weights
    assert {graph.form(g.name) for g in checked.spec.gates} == {"task", "critics"}
    assert {graph.form(t.name) for t in checked.spec.tasks} == {"critics"}
    sizes = {f.name: 10 for f in checked.spec.features if f.embedded}
    model = compile_model(checked.spec, graph, vocab_sizes=sizes)
    rows = {r["name"]: r for r in model.summary()}
    assert rows[critics]["kind"] == "critics" and rows[critics]["params"] > 0
    assert all(rows[u]["params"] == 0 for u in uses)
    assert not len(model.heads)  # every task's logit is its critic gate's mix


def test_tasks_and_gates_carry_their_form() -> None:
    spec = check_text(MMOE).spec
    from mtl_dsl.language.graph import TaskGraph

    graph = TaskGraph(spec)
    assert {graph.form(g.name) for g in spec.gates} == {"softmax"}
    assert {graph.form(t.name) for t in spec.tasks} == {"head"}


def test_the_block_tables_cover_exactly_the_registry_kinds() -> None:
    from mtl_dsl.language import registry
    from mtl_dsl.model.implementations import TABLES

    for role, table in TABLES.items():
        assert set(table) == set(registry.kinds(role)), role


def test_blocks_come_from_the_model_tables() -> None:
    from mtl_dsl.language.registry import MLPParams, SoftmaxGateParams
    from mtl_dsl.model.blocks import MLP
    from mtl_dsl.model.gates import SoftmaxGate
    from mtl_dsl.model.implementations import block_class

    assert block_class("net", MLPParams) is MLP
    assert block_class("gate", SoftmaxGateParams) is SoftmaxGate
    model = compiled(MMOE)
    assert all(type(m) is MLP for m in model.towers.values())
    assert all(type(m) is SoftmaxGate for m in model.gates.values())


def test_names_that_are_module_attributes_compile():
    """`task train` or `tower keys` would shadow nn.ModuleDict attributes as keys (found by
    bench/fuzz.py: KeyError "attribute 'train' already exists"); they are escaped."""
    text = """model m
data synthetic.correlated(rows=100, dim=4)
feature x = dense(4)
label y1, y2
experts e[2] = mlp(x, 4)
gate g = softmax(x) over e
tower keys = mlp(g, 4)
tower t_b = mlp(g, 4)
task train: regression(label=y1) from keys
task b: regression(label=y2) from t_b
"""
    checked = check_text(text)
    assert checked.ok, checked.diagnostics
    model = compile_model(checked.spec, checked.graph, {})
    out = model({"x": torch.randn(3, 4)})
    assert set(out) == {"train", "b"} and out["train"].shape == (3,)
    assert "heads.train-.proj.weight" in model.state_dict()
    assert model.train() is model  # the module's own train() is untouched
