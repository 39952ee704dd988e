"""The embedding engine: rows a step touches, updated by the embedding optimizer.

Each row optimizer against an oracle (torch's dense Adam when every row is touched, torch's
Adagrad on a sparse gradient, FBGEMM's row-wise Adagrad written out, SGD); a training step
that changes only the rows its batch reads; `clip=` whose norm includes the rows' gradient;
`embedding_l2` on touched rows only; the engines chosen for MAML and gradient methods over
the tables (dense gradients, nonzero rows); `embedding_optimizer=dense` as before.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import ROOT
from mtl_dsl.api import check_text
from mtl_dsl.language.graph import TaskGraph
from mtl_dsl.language.memory import dense_gradients, placement
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.training.embeddings import row_optimizers as ro
from mtl_dsl.training.distributed import Group
from mtl_dsl.training.embeddings.engine import EmbeddingEngine, RowEngine, make_engine
from mtl_dsl.training.loop import train
from mtl_dsl.training.optim import clip_gradients, make_optimizer
from mtl_dsl.training.embeddings.row_sources import FullGradients, LocalRows
from mtl_dsl.training.weighting.methods import make
from test_train import small

ESMM = ROOT / "specs" / "esmm.mtl"


def grads(rows: int, d: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, d, generator=g) for _ in range(steps)]


def test_lazy_adam_is_torch_adam_on_rows_touched_every_step():
    table = torch.randn(12, 4)
    dense = table.clone().requires_grad_()
    adam = torch.optim.Adam([dense], lr=0.01, foreach=False)
    slots = ro.state("lazy_adam", table)
    for t, g in enumerate(grads(12, 4, 6), start=1):
        dense.grad = g.clone()
        adam.step()
        ro.update("lazy_adam", table, slots, torch.arange(12), g, 0.01, t)
    assert torch.equal(table, dense.detach())
    assert torch.equal(slots["m"], adam.state[dense]["exp_avg"])


def test_lazy_adam_leaves_untouched_rows_and_their_moments_alone():
    table = torch.randn(10, 3)
    before = table.clone()
    slots = ro.state("lazy_adam", table)
    touched = torch.tensor([1, 4, 7])
    for t, g in enumerate(grads(3, 3, 3), start=1):
        ro.update("lazy_adam", table, slots, touched, g, 0.1, t)
    rest = torch.tensor([i for i in range(10) if i not in touched.tolist()])
    assert torch.equal(table[rest], before[rest]) and not torch.equal(table[touched],
                                                                       before[touched])
    assert slots["m"][rest].abs().sum() == 0 and slots["v"][touched].abs().min() > 0


def test_rowwise_adagrad_is_fbgemms_formula_with_duplicates_summed():
    """G_r += mean_d(g_r^2); w_r -= lr g_r / (sqrt(G_r) + eps), g_r summed over the batch's
    occurrences of row r (NOTES: verified against FBGEMM's TBE to 1.5e-8)."""
    table = torch.randn(8, 4, dtype=torch.float64)
    expect, G = table.clone(), torch.zeros(8, dtype=torch.float64)
    slots = ro.state("rowwise_adagrad", table)
    ids = torch.tensor([3, 1, 3, 5, 3, 1])
    for g in grads(6, 4, 3):
        g = g.double()
        rows, summed = ro.coalesce(ids, g)
        ro.update("rowwise_adagrad", table, slots, rows, summed, 0.05, 1)
        for r in set(ids.tolist()):
            gr = g[ids == r].sum(0)
            G[r] += gr.pow(2).mean()
            expect[r] -= 0.05 * gr / (G[r].sqrt() + 1e-8)
    torch.testing.assert_close(table, expect, rtol=0, atol=1e-12)
    assert slots["row_sum"].shape == (8,) and torch.equal(slots["row_sum"], G)


def test_adagrad_is_torch_adagrad_on_a_sparse_gradient():
    table = torch.randn(9, 3)
    ref = table.clone().requires_grad_()
    adagrad = torch.optim.Adagrad([ref], lr=0.1)
    slots = ro.state("adagrad", table)
    rows = torch.tensor([0, 2, 5])
    for g in grads(3, 3, 4):
        ref.grad = torch.sparse_coo_tensor(rows[None], g, (9, 3), check_invariants=True)
        with torch.sparse.check_sparse_tensor_invariants():  # torch's own sparse rows checked
            adagrad.step()
        ro.update("adagrad", table, slots, rows, g, 0.1, 1)
    torch.testing.assert_close(table, ref.detach(), rtol=0, atol=1e-6)


def test_sgd_and_l2_on_touched_rows_only():
    table = torch.ones(5, 2)
    ro.update("sgd", table, {}, torch.tensor([1, 3]), torch.full((2, 2), 2.0), 0.5, 1, l2=0.1)
    # w - lr (g + l2 w) on rows 1 and 3: 1 - 0.5 (2 + 0.1); the others keep their value
    assert torch.allclose(table[[1, 3]], torch.tensor(1 - 0.5 * 2.1))
    assert table[[0, 2, 4]].eq(1).all()


def esmm_text(train: str) -> str:
    text = ESMM.read_text().replace("rows=50000", "rows=600")
    return "\n".join(train if line.startswith("train ") else line
                     for line in text.splitlines()) + "\n"


def setup(train_line: str, weighting: str | None = None, backend=None):
    """(spec, a compiled ESMM, its engine: the spec's, or RowEngine over `backend`)."""
    text = esmm_text(train_line)
    if weighting is not None:
        text = text.replace("weighting fixed", f"weighting {weighting}")
    checked = check_text(text, str(ESMM)).raise_for_errors()
    spec, graph = checked.spec, TaskGraph(checked.spec)
    torch.manual_seed(0)
    model = compile_model(spec, graph, {"user": 50, "item": 40, "category": 6})
    if backend is not None:
        return spec, model, RowEngine(spec, backend(spec, model.embeddings), model, "test")
    group = Group(0, 1, torch.device("cpu"))
    engine = make_engine(spec, graph, model, group, placement([], 10**12))
    return spec, model, engine


def batch(n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"user": torch.randint(0, 50, (n,), generator=g),
            "item": torch.randint(0, 40, (n,), generator=g),
            "category": torch.randint(0, 6, (n,), generator=g),
            "d": torch.randn(n, 4, generator=g)}


def step(model, engine, b, optimizer=None, spec=None) -> float | None:
    engine.begin()
    out = model(b)
    loss = sum(torch.sigmoid(v).mean() for v in out.values())
    loss.backward()
    engine.exchange()
    norm = clip_gradients(spec, model, engine) if spec is not None else None
    if optimizer is not None:
        optimizer.step()
    engine.step(1.0)
    return norm


def test_a_step_changes_exactly_the_rows_its_batch_reads():
    spec, model, engine = setup("train epochs=1 batch=64 lr=0.01 seed=1")
    assert isinstance(engine, RowEngine) and isinstance(engine.backend, LocalRows)
    table = model.embeddings.tables["d16"].weight
    assert not table.requires_grad  # the engine's, not autograd's nor Adam's
    before = table.detach().clone()
    b = batch()
    step(model, engine, b)
    emb = model.embeddings
    read = torch.cat([b["user"] + emb.offset["user"], b["item"] + emb.offset["item"]])
    changed = (table != before).any(1).nonzero().squeeze(1)
    assert torch.equal(changed, torch.unique(read))
    assert table.grad is None


def test_clipping_includes_the_rows_and_equals_the_dense_gradients_norm():
    """The same step under LocalRows (leaf rows) and FullGradients (dense table gradients):
    the clipped norm and the weights after the update agree."""
    line = "train epochs=1 batch=64 lr=0.01 seed=1 clip=0.01"
    spec, a, engine_a = setup(line)
    _, b, engine_b = setup(line, backend=FullGradients)
    opt_a = make_optimizer(spec, a, make(spec), skip=engine_a.owned())
    opt_b = make_optimizer(spec, b, make(spec), skip=engine_b.owned())
    x = batch(32, seed=3)
    norm_a = step(a, engine_a, x, opt_a, spec)
    norm_b = step(b, engine_b, x, opt_b, spec)
    dense = [p for p in b.parameters() if p.grad is not None]
    assert norm_a == pytest.approx(norm_b, rel=1e-5) and norm_a > 0.01  # it clipped
    assert any(p in dense for p in engine_b.owned())  # the tables' dense gradient counted
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=k)


TWO_TOWERS = """model m
data synthetic.funnel(rows=600, seed=1)
feature user = sparse(dim=8)
feature d = dense(4)
label click, purchase
input x = concat(user, d)
tower a = mlp(x, 8)
tower b = mlp(x, 8)
task ctr: binary(label=click) from a
task cvr: binary(label=purchase) from b
weighting gradnorm
"""  # only the table is shared: it is GradNorm's last shared layer


def test_weightings_that_need_the_tables_gradients_get_dense_ones():
    for weighting, backend in (("upgrad(embeddings=true)", FullGradients),
                               ("upgrad", LocalRows), ("gradnorm", LocalRows)):
        _, _, engine = setup("train epochs=1 batch=64 lr=0.01 seed=1", weighting)
        assert isinstance(engine.backend, backend), weighting  # ESMM: towers are last shared
    checked = check_text(TWO_TOWERS, "m.mtl").raise_for_errors()
    graph = TaskGraph(checked.spec)
    assert dense_gradients(checked.spec, graph) == \
        "gradnorm's last shared layer is an embedding table"
    model = compile_model(checked.spec, graph, {"user": 30})
    engine = make_engine(checked.spec, graph, model, Group(0, 1, torch.device("cpu")),
                         placement([], 10**12))
    assert isinstance(engine.backend, FullGradients)
    assert model.embeddings.tables["d8"].weight.requires_grad  # GradNorm reads its gradient


def test_dense_keeps_the_tables_in_adams_embeddings_group():
    spec, model, engine = setup("train epochs=1 batch=64 lr=0.01 seed=1 "
                                "embedding_optimizer=dense embedding_l2=1e-4")
    assert type(engine) is EmbeddingEngine and engine.owned() == ()
    groups = {g["name"]: g for g in make_optimizer(spec, model, make(spec)).param_groups}
    assert groups["embeddings"]["weight_decay"] == 1e-4
    assert model.embeddings.tables["d16"].weight in groups["embeddings"]["params"]


@pytest.mark.parametrize("optimizer", ["lazy_adam", "rowwise_adagrad", "adagrad", "sgd"])
def test_every_embedding_optimizer_trains_esmm(optimizer, tmp_path):
    spec = small(ESMM, rows=1500, batch=128, embedding_optimizer=optimizer,
                 embedding_lr=0.05 if optimizer != "lazy_adam" else None, clip=1.0)
    result = train(spec, epochs=2, out_dir=tmp_path, progress=False)
    first, last = result.history[0]["val"], result.history[-1]["val"]
    assert last["ctr"]["loss"] < first["ctr"]["loss"]
    start = next(r for r in result_log(result) if r["type"] == "start")
    assert start["tables"]["embedding_optimizer"] == optimizer


def result_log(result) -> list[dict]:
    import json

    return [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]


def test_maml_trains_with_dense_table_gradients(tmp_path):
    spec = small(ROOT / "specs" / "metaheac.mtl", rows=400, batch=64)
    result = train(spec, epochs=1, out_dir=tmp_path, progress=False)
    start = next(r for r in result_log(result) if r["type"] == "start")
    assert start["tables"]["dense_gradients"] == "meta=maml adapts every parameter"
    assert result.history[-1]["val"]


def test_tables_with_dense_gradients_stay_out_of_the_dense_optimizer():
    spec, model, engine = setup("train epochs=1 batch=64 lr=0.01 seed=1",
                                "upgrad(embeddings=true)")
    opt = make_optimizer(spec, model, make(spec), skip=engine.owned())
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert engine.owned() and all(p.requires_grad for p in engine.owned())
    assert not any(id(p) in held for p in engine.owned())
    assert all(isinstance(p, nn.Parameter) for p in engine.owned())


def test_check_warns_when_big_tables_would_take_dense_gradients():
    """W008 at the weighting: upgrad(embeddings=true) over 2,000,001 + 40 rows of tables
    takes their full gradient every step; not under 1e6 rows, nor on=representation."""
    big = esmm_text("train epochs=1 batch=64").replace(
        "feature user = sparse(dim=16)", "feature user = sparse(hash=2000000, dim=16)")
    for weighting, warned in (("upgrad(embeddings=true)", True), ("upgrad", False),
                              ("upgrad(on=representation)", False)):
        checked = check_text(big.replace("weighting fixed", f"weighting {weighting}"), "b.mtl")
        found = [d for d in checked.diagnostics if d.code == "W008"]
        assert bool(found) == warned, weighting
    d = found_of(big.replace("weighting fixed", "weighting upgrad(embeddings=true)"))
    assert d.severity == "warning" and "2,000,001 rows" in d.message and d.span.line == 24
    small_tables = esmm_text("train epochs=1").replace("weighting fixed",
                                                       "weighting upgrad(embeddings=true)")
    assert found_of(small_tables) is None


def found_of(text: str):
    return next((d for d in check_text(text, "b.mtl").diagnostics if d.code == "W008"), None)
