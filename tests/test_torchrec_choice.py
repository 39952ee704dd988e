"""Which engine holds the tables (`train engine=auto|native|torchrec`, docs/scaling.md) and how
they are sharded, decided without TorchRec itself: these run whether or not it is installed.
`auto` takes TorchRec on a GPU where it is installed and the spec fits it; `torchrec` refuses
with E604 at the spec's line what TorchRec cannot do (not installed, an encoded sequence, a table pooled
two ways, Adam on CPU, settings that need the tables' gradient); the sharding follows the
tables' sizes unless the owner's `shard=` says otherwise; and none of it imports torchrec."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from torchrec_cases import build, spec_text
from mtl_dsl.api import check_text
from mtl_dsl.language.diagnostics import MtlError
from mtl_dsl.model.torchrec_tables import Layout
from mtl_dsl.training.embeddings import torchrec_engine
from mtl_dsl.training.embeddings.torchrec_engine import TableOptimizer, choose
from mtl_dsl.training.embeddings.torchrec_plan import by_size, shardings

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # no GPU needed to decide
ROWWISE = TableOptimizer("rowwise_adagrad", 0.1)


def decide(text: str, optimizer: TableOptimizer = ROWWISE, device=CPU) -> str:
    spec, model, _ = build(text)
    return choose(spec, model.graph, Layout.of(model.calls["embeddings"], model.embeddings),
                  optimizer, device)


def refused(text: str, **options) -> str:
    """The rendered E604 of `engine=torchrec` on `text`."""
    with pytest.raises(MtlError) as err:
        decide(text.replace("seed=7", "seed=7 engine=torchrec"), **options)
    assert {d.code for d in err.value.diagnostics} == {"E604"}
    return err.value.render()


@pytest.fixture
def present(monkeypatch):
    """TorchRec counted as installed (its absence is the other case)."""
    monkeypatch.setattr(torchrec_engine, "installed", lambda: True)


def test_auto_takes_torchrec_on_a_gpu_where_it_is_installed(monkeypatch):
    monkeypatch.setattr(torchrec_engine, "installed", lambda: True)
    assert decide(spec_text(), device=CUDA) == "torchrec"
    assert decide(spec_text()) == "native"  # on a CPU: the native tables (docs/scaling.md)
    assert decide(spec_text().replace("seed=7", "seed=7 engine=torchrec")) == "torchrec"
    assert decide(spec_text().replace("seed=7", "seed=7 engine=native"), device=CUDA) == "native"
    monkeypatch.setattr(torchrec_engine, "installed", lambda: False)
    assert decide(spec_text(), device=CUDA) == "native"


def test_engine_torchrec_without_torchrec_says_how_to_install(monkeypatch):
    monkeypatch.setattr(torchrec_engine, "installed", lambda: False)
    text = refused(spec_text())
    assert "error[E604]: train engine=torchrec: TorchRec is not installed" in text
    assert "15 | train epochs=1 batch=16 lr=0.05 seed=7 engine=torchrec" in text
    assert "\n   |" + " " * 40 + "^" * len("engine=torchrec") + "\n" in text  # under it
    assert "bash .ci/install-torchrec" in text and "--no-deps torchrec==1.8.0" in text


def test_an_encoded_sequence_stays_native(present):
    dupn = spec_text().replace("max_len=10)", "max_len=10, encoder=gru)")
    assert decide(dupn, device=CUDA) == "native"
    text = refused(dupn)
    assert "sequence 'hist' is encoded" in text
    assert "feature hist = sequence(share=item, column=history, max_len=10, encoder=gru)" in text


def test_a_table_pooled_two_ways_stays_native(present):
    two = spec_text().replace(
        "feature d = dense(4)",
        "feature total = sequence(share=item, column=history, pool=sum)\nfeature d = dense(4)"
    ).replace("input x = concat(user,", "input x = concat(total, user,")
    assert decide(two, device=CUDA) == "native"
    assert "table 'item' is pooled by mean ('hist') and by sum ('total')" in refused(two)


def test_optimizers_fbgemm_runs_and_those_it_refuses(present):
    for name in ("rowwise_adagrad", "adagrad", "sgd"):
        assert TableOptimizer(name, 0.1).refusal(CPU) is None
    adam = TableOptimizer("lazy_adam", 0.1)
    assert "FBGEMM's CPU kernels have no lazy_adam" in adam.refusal(CPU)
    assert adam.refusal(torch.device("cuda")) is None
    assert "the model's optimizer" in TableOptimizer("dense", 0.1).refusal(CPU)
    assert decide(spec_text(), adam) == "native"
    assert decide(spec_text(), adam, device=CUDA) == "torchrec"
    assert "no lazy_adam (Adam is GPU-only)" in refused(spec_text(), optimizer=adam)


@pytest.mark.parametrize("setting,said", [
    ("clip=1.0", "train clip= needs the tables' gradient"),
    ("embedding_l2=1e-5", "train embedding_l2= needs the tables' gradient"),
])
def test_settings_that_need_the_tables_gradient_stay_native(present, setting, said):
    text = spec_text(extra=setting)
    assert decide(text, device=CUDA) == "native"
    assert said in refused(text)


def test_weightings_reading_the_tables_gradient_stay_native(present):
    # the towers share nothing but the tables: gradnorm's last shared blocks are tables
    gradnorm = spec_text().replace("weighting fixed", "weighting gradnorm")
    assert "weighting gradnorm reads the gradient of the shared tables" in refused(gradnorm)
    uncertainty = spec_text().replace("weighting fixed", "weighting uncertainty")
    assert decide(uncertainty, device=CUDA) == "torchrec"


def test_sharding_by_size_and_by_the_spec():
    assert by_size(1000, 16, "rowwise_adagrad") == "data_parallel"
    assert by_size(20_000_000, 32, "rowwise_adagrad") == "table_wise"  # 2.6 GB of 64 GiB
    assert by_size(100_000_000, 16, "rowwise_adagrad", 4 * 2**30) == "row_wise"
    # wide tables split by columns, except under row-wise Adagrad (per-shard row state)
    assert by_size(100_000_000, 128, "adagrad") == "column_wise"
    assert by_size(100_000_000, 128, "rowwise_adagrad") == "row_wise"
    spec, model, _ = build(spec_text({"user": "row_wise", "item": "auto",
                                      "category": "table_wise"}))
    layout = Layout.of(model.calls["embeddings"], model.embeddings)
    assert shardings(spec, layout, "rowwise_adagrad") == {
        "user": "row_wise", "item": "data_parallel", "category": "table_wise"}


def test_shard_belongs_to_the_tables_owner():
    checked = check_text(spec_text().replace("max_len=10)", "max_len=10, shard=row_wise)"))
    (diag,) = checked.diagnostics
    assert diag.span.line == 6 and "shard= belongs to the table's owner" in diag.message
    typo = check_text(spec_text("row_wise").replace("shard=row_wise", "shard=rowwise", 1))
    (diag,) = typo.diagnostics
    assert diag.code == "E301" and "'row_wise'" in diag.message and diag.span.line == 3


def test_the_engine_imports_torchrec_only_when_it_runs():
    code = ("import sys\n"
            "import mtl_dsl.training.embeddings.torchrec_engine, mtl_dsl.training.embeddings.torchrec_checkpoints\n"
            "assert not {'torchrec', 'fbgemm_gpu'} & set(sys.modules), 'imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


INSTALL = ROOT / ".ci" / "install-torchrec"


def test_the_install_script_leaves_another_torch_alone(tmp_path):
    """A venv whose torch is not 2.13.0 (FBGEMM's CPU wheel is built for it) is not touched:
    the script says why and exits 0; no venv at all is an error."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 2.12.0+cu126\n')
    python.chmod(0o755)
    out = subprocess.run(["bash", str(INSTALL), str(venv)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "skipped: " in out.stderr and "holds torch 2.12.0+cu126" in out.stderr
    assert "-m pip" not in calls.read_text()  # nothing installed
    missing = subprocess.run(["bash", str(INSTALL), str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no venv at" in missing.stderr


def test_a_refused_engine_is_exit_1_at_its_line_from_the_cli(tmp_path):
    """`mtl compile --train` with engine=torchrec that TorchRec cannot take: E604 at the
    spec's line, exit 1, no traceback (whether TorchRec is installed or not)."""
    path = tmp_path / "tr.mtl"
    path.write_text(spec_text(extra="embedding_optimizer=rowwise_adagrad clip=1.0 "
                                    "engine=torchrec"))
    out = subprocess.run([sys.executable, "-m", "mtl_dsl", "compile", str(path), "--train",
                          "--out", str(tmp_path / "runs")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr
    assert "error[E604]: train clip= needs the tables' gradient" in out.stderr
    assert "tr.mtl:15:" in out.stderr and "Traceback" not in out.stderr
