"""The TorchRec engine in one process (docs/scaling.md, "Embedding tables larger than one
machine"): the tables of a compiled model moved into one fused EmbeddingBagCollection fed by a
KeyedJaggedTensor look up what the native tables look up, and a training step with FBGEMM's
fused optimizer equals the same step written by hand (row-wise Adagrad, Adagrad, SGD); the
tables' state survives a checkpoint bit for bit, and comes back as the plain module that
checkpoint.pt and the exports hold. Skipped where TorchRec is not installed (CI installs it:
.ci/install-torchrec)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from mtl_dsl.model.torchrec_tables import installed

pytestmark = pytest.mark.skipif(not installed(), reason="TorchRec is not installed "
                                "(bash .ci/install-torchrec)")

from torchrec_cases import (TABLE_LR, build, dense_state, global_batches,  # noqa: E402
                            spec_text, step)
from mtl_dsl.training.distributed import Group  # noqa: E402

ONE = Group(0, 1, torch.device("cpu"))
EPS = 1e-8


def attach(model, optimizer: str = "rowwise_adagrad"):
    from mtl_dsl.training.embeddings.torchrec_engine import TableOptimizer, TorchRecEngine

    return TorchRecEngine.attach(model, TableOptimizer(optimizer, TABLE_LR))


class HandWritten:
    """The native tables (nn.Embedding per dim, dense gradient) updated by NOTES' formulas:
    row-wise Adagrad G_r += mean_d(g_r²), w_r -= lr g_r / (sqrt(G_r) + eps); Adagrad the same
    per cell; SGD w -= lr g. A row outside the batch has g = 0 and stays as it is."""

    def __init__(self, model, optimizer: str):
        self.model, self.optimizer = model, optimizer
        self.tables = [t.weight for t in model.embeddings.tables.values()]
        self.state = [torch.zeros(w.shape[0], 1) if optimizer == "rowwise_adagrad"
                      else torch.zeros_like(w) for w in self.tables]

    def model_parameters(self):
        ids = {id(w) for w in self.tables}
        return [p for p in self.model.parameters() if id(p) not in ids]

    def averaged_parameters(self):
        return self.model_parameters() + self.tables

    def zero_grad(self):
        pass

    @torch.no_grad()
    def step(self):
        for w, state in zip(self.tables, self.state):
            g = w.grad
            if self.optimizer == "sgd":
                w -= TABLE_LR * g
                continue
            state += g.pow(2).mean(1, keepdim=True) if self.optimizer == "rowwise_adagrad" \
                else g.pow(2)
            w -= TABLE_LR * g / (state.sqrt() + EPS)


def tables_of(model) -> dict[str, torch.Tensor]:
    """Owner -> its full table, from either engine's module."""
    emb = model.embeddings
    if hasattr(emb, "ebc"):
        sd = emb.ebc.state_dict()
        return {o: sd[f"embedding_bags.{o}.weight"].detach().clone() for o in emb.vocab}
    return {o: emb.rows(o).detach().clone() for o in emb.vocab}


def test_lookups_equal_the_native_tables():
    """Sum and mean bags, a shared table, an empty bag, padding rows: the native outputs."""
    _, model, data = build(spec_text())
    batch = global_batches(data)[0]
    assert not (batch["hist"][0] >= 0).any()  # the empty bag
    want = {f: v.detach().clone() for f, v in model.trace(batch).items()
            if f in ("user", "item", "category", "hist", "x")}
    engine = attach(model)
    assert engine.tables.layout.pooling() == {"user": "sum", "item": "mean", "category": "sum"}
    for stride in (0, len(batch["user"]) + 3):
        engine.tables.stride = stride
        got = model.trace(batch)
        for f, v in want.items():
            torch.testing.assert_close(got[f], v, atol=1e-6, rtol=0, msg=f)
    assert not got["hist"][0].any()  # an empty bag pools to zeros


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "adagrad", "sgd"])
def test_a_fused_step_equals_the_hand_written_update(optimizer):
    spec, native, data = build(spec_text())
    batches = global_batches(data)
    start = tables_of(native)
    reference = HandWritten(native, optimizer)
    want = [step(native, reference, b, ONE) for b in batches]
    _, model, _ = build(spec_text())
    engine = attach(model, optimizer)
    got = [step(model, engine, b, ONE) for b in batches]
    assert got == pytest.approx(want, abs=1e-6)
    for k, v in dense_state(native).items():
        torch.testing.assert_close(dense_state(model)[k], v, atol=1e-6, rtol=0, msg=k)
    seen = {o: torch.unique(torch.cat([b[f][b[f] >= 0] for b in batches
                                       for f, owner in engine.tables.layout.owner.items()
                                       if owner == o])) for o in start}
    trained, after = tables_of(native), tables_of(model)
    for o, w in trained.items():
        torch.testing.assert_close(after[o], w, atol=1e-6, rtol=0, msg=o)
        assert (w[seen[o]] - start[o][seen[o]]).abs().max() > 1e-4  # 100 x the tolerance
        untouched = torch.ones(len(w), dtype=torch.bool)
        untouched[seen[o]] = False
        assert torch.equal(after[o][untouched], start[o][untouched])  # bit for bit


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "adagrad"])
def test_tables_resume_bit_for_bit(tmp_path, optimizer):
    """The tables and their optimizer state saved after a step and loaded into a new engine:
    the next steps are the uninterrupted run's, exactly."""
    from mtl_dsl.training.embeddings.torchrec_checkpoints import load_tables, save_tables, table_state

    _, model, data = build(spec_text())
    batches = global_batches(data)
    engine = attach(model, optimizer)
    assert set(table_state(engine)) == {f"{o}.{k}" for o in ("user", "item", "category")
                                         for k in ("weight", "state")}
    save_tables(engine, tmp_path / "tables")  # the untrained tables, replaced below
    step(model, engine, batches[0], ONE)
    save_tables(engine, tmp_path / "tables")
    dense = dense_state(model)
    tail = [step(model, engine, b, ONE) for b in batches[1:]]
    _, again, _ = build(spec_text())
    resumed = attach(again, optimizer)
    load_tables(resumed, tmp_path / "tables")
    again.load_state_dict(dense, strict=False)
    assert [step(again, resumed, b, ONE) for b in batches[1:]] == tail
    for o, w in tables_of(model).items():
        assert torch.equal(tables_of(again)[o], w), o


def test_native_embeddings_hold_the_trained_tables():
    """The model's state dict holds no table while TorchRec does; what checkpoint.pt and the
    exports hold is the plain `Embeddings` with the trained tables, under a native model's
    keys, computing what the TorchRec tables compute."""
    from mtl_dsl.training.embeddings.torchrec_checkpoints import native_embeddings

    _, model, data = build(spec_text())
    keys = set(model.state_dict())
    before = sum(p.numel() for p in model.parameters())
    engine = attach(model)
    # the tables are the engine's: outside the model's parameters and state dict
    assert set(model.state_dict()) == {k for k in keys if not k.startswith("embeddings.")}
    tables = sum(rows * model.embeddings.dim_of[o] for o, rows in model.embeddings.vocab.items())
    assert sum(p.numel() for p in model.parameters()) == before - tables
    batches = global_batches(data)
    step(model, engine, batches[0], ONE)
    want = {k: v.detach() for k, v in model(batches[1]).items()}
    trained = tables_of(model)
    model.use_embeddings(native_embeddings(engine))
    assert set(model.state_dict()) == keys
    for o, w in trained.items():
        assert torch.equal(model.embeddings.rows(o), w)
    for k, v in model(batches[1]).items():
        torch.testing.assert_close(v, want[k], atol=1e-6, rtol=0)


def test_importing_torchrec_leaves_logging_and_warnings_as_they_were():
    """fbgemm's import adds a root handler and warns; `torchrec_names` leaves no trace and
    prints nothing, even under -W default (what pytest and -W users see)."""
    code = ("import logging, warnings, torch\n"
            "before = (list(logging.getLogger().handlers), list(warnings.filters))\n"
            "from mtl_dsl.model.torchrec_tables import torchrec_names, keyed_ids\n"
            "torchrec_names()\n"
            "assert (list(logging.getLogger().handlers), list(warnings.filters)) == before\n"
            "import fbgemm_gpu, torchrec\n"  # already imported: nothing more happens
            "logging.getLogger('x').warning('shown: the root logger has no handler')\n")
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "shown: the root logger has no handler"


def test_the_install_script_is_quick_a_second_time():
    """Installed (as here): the script's second run checks versions and stops, under 3 s."""
    out = subprocess.run(["bash", str(ROOT / ".ci" / "install-torchrec"),
                          str(Path(sys.executable).parents[1])],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "TorchRec up to date" in out.stderr


def test_tables_torchrec_initialises_are_normal_and_seeded_per_rank():
    """Tables the native placement holds empty are drawn by TorchRec shard by shard
    (`seeded_normal`): N(0, 1), the same for the same seed and table, another table's or
    seed's rows otherwise (the global generator would give every rank's shard the same)."""
    from mtl_dsl.model.torchrec_tables import seeded_normal

    a, b, c = (seeded_normal(t, s, torch.empty(2000, 8)) for t, s in
               (("user", 7), ("user", 7), ("item", 7)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1) < 0.05
    assert not torch.equal(a, seeded_normal("user", 8, torch.empty(2000, 8)))
