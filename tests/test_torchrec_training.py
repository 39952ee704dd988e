"""Training with `train engine=torchrec` through the trainer (training/loop.py and its
embedding-engine seam, docs/scaling.md "The TorchRec engine"): a run equals the native
engine's run with the same embedding optimizer (a warm-up and cosine schedule included: the
fused update takes the step's rate before its backward pass); a run stopped after an epoch
resumes bit for bit; its checkpoint.pt exports to ONNX and torch.export, which predict what
the checkpoint does; 2 processes sharding the tables by a mixed plan end with one process's
weights. Skipped where TorchRec is not installed (CI installs it: .ci/install-torchrec)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_dsl.model.torchrec_tables import installed

pytestmark = pytest.mark.skipif(not installed(), reason="TorchRec is not installed "
                                "(bash .ci/install-torchrec)")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from torchrec_cases import spec_text  # noqa: E402
from mtl_dsl.api import check_text  # noqa: E402
from mtl_dsl.data.frames import load as load_data  # noqa: E402
from mtl_dsl.tools.serving import artefacts, bundle  # noqa: E402
from mtl_dsl.tools.serving.export import export_run  # noqa: E402
from mtl_dsl.tools.serving.predict import predictions  # noqa: E402
from mtl_dsl.training.checkpoints import load_checkpoint  # noqa: E402
from mtl_dsl.training.loop import train  # noqa: E402

SCHEDULE = "schedule=cosine warmup=4 embedding_lr=0.1"
MIXED = {"user": "row_wise", "item": "table_wise", "category": "data_parallel"}


def spec(engine: str, optimizer: str = "rowwise_adagrad", shard="auto", epochs: int = 2,
         schedule: str = SCHEDULE):
    text = spec_text(shard, extra=f"embedding_optimizer={optimizer} {schedule} "
                                  f"engine={engine}").replace("epochs=1", f"epochs={epochs}")
    return check_text(text).raise_for_errors()


def run(checked, out, **options):
    return train(checked.spec, checked.graph, out_dir=out, progress=False, device="cpu",
                 **options)


def tables_of(run_dir: Path) -> dict:
    """The run log's "tables" entry (the engine's `describe`)."""
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["tables"]


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "adagrad"])
def test_a_torchrec_run_equals_the_native_engines(tmp_path, optimizer):
    native = run(spec("native", optimizer), tmp_path)
    fused = run(spec("torchrec", optimizer), tmp_path)
    assert tables_of(fused.run_dir)["engine"] == "torchrec"
    assert "engine" not in tables_of(native.run_dir)
    a, b = native.model.state_dict(), fused.model.state_dict()
    assert set(a) == set(b)
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, atol=1e-6, rtol=0, msg=k)
    tables = [k for k in a if k.startswith("embeddings.tables.")]
    start = run(spec("native", optimizer, epochs=1), tmp_path / "one").model.state_dict()
    assert any((a[k] - start[k]).abs().max() > 1e-3 for k in tables)  # the second epoch moved
    for task, metrics in native.best_metrics.items():
        for name, value in metrics.items():
            assert fused.best_metrics[task][name] == pytest.approx(value, abs=1e-5)


def test_a_torchrec_run_resumes_bit_for_bit(tmp_path):
    # a constant rate: a resume with more epochs= stretches a cosine schedule (language.md)
    checked = spec("torchrec", epochs=3, schedule="embedding_lr=0.1")
    whole = run(checked, tmp_path / "a")
    first = run(checked, tmp_path / "b", epochs=1)
    folders = [p.name.split("-")[0] for p in first.run_dir.glob("*.torchrec-*")]
    assert 0 < folders.count("resume.torchrec") <= 2  # older saves than the last two: gone
    named = torch.load(first.run_dir / "resume.pt", weights_only=True)["tables"]["folder"]
    assert (first.run_dir / named / ".metadata").is_file()
    after_one = last_state(first.run_dir)
    resumed = run(checked, None, epochs=3, resume=first.run_dir)
    a, b = last_state(whole.run_dir), last_state(resumed.run_dir)  # epoch 3's weights
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    table = "embeddings.tables.d8.weight"
    assert (a[table] - after_one[table]).abs().max() > 1e-3  # epochs 2 and 3 did train


def last_state(run_dir) -> dict[str, torch.Tensor]:
    """The weights resume.pt holds (the last epoch's, before the best one is restored),
    with the tables read from its TorchRec folder, under the native model's keys."""
    from mtl_dsl.training.embeddings.torchrec_checkpoints import native_state

    saved = torch.load(run_dir / "resume.pt", weights_only=True)
    template = load_checkpoint(run_dir / "checkpoint.pt").model
    return native_state(run_dir / saved["tables"]["folder"], saved["model"], template)


def test_a_torchrec_model_exports(tmp_path):
    """checkpoint.pt holds the dense part and names the tables' folder; loaded, the model
    is the plain one, and its ONNX and torch.export files predict what it does."""
    result = run(spec("torchrec", epochs=1), tmp_path)
    saved = torch.load(result.checkpoint, weights_only=True)
    assert saved["tables"]["engine"] == "torchrec"
    assert not any(k.startswith("embeddings.") for k in saved["state_dict"])
    ck = load_checkpoint(result.checkpoint)
    for k, v in result.model.state_dict().items():  # the trained tables, whole
        assert torch.equal(ck.model.state_dict()[k], v), k
    frame = load_data(ck.spec)
    want = predictions(ck, frame)
    for suffix, got in ((".onnx", lambda f: bundle.onnx_predictions(f, frame, batch=97)),
                        (".pt2", lambda f: artefacts.frame_predictions(f, ck, frame))):
        out = got(export_run(ck, tmp_path / f"model{suffix}"))
        for task, p in want.items():
            np.testing.assert_allclose(out[task], p, rtol=0, atol=1e-5, err_msg=suffix)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    result = run(spec("torchrec", shard=MIXED), out)
    if rank == 0:
        Path(out, "run.txt").write_text(str(result.run_dir))
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_with_sharded_tables_train_as_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    run_dir = Path((tmp_path / "run.txt").read_text())
    assert tables_of(run_dir)["tables"] == MIXED
    two = load_checkpoint(run_dir / "checkpoint.pt").model.state_dict()
    one = run(spec("native"), tmp_path / "one").model.state_dict()
    assert set(one) == set(two)
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, atol=1e-5, rtol=0, msg=k)
