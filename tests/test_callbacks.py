"""The loop's hooks (mtl_dsl.training.callbacks): called in order, with the records written."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from mtl_dsl.training.callbacks import Callback, Callbacks
from mtl_dsl.training.loop import train
from test_train import small


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_start(self, run, first_epoch, total_steps):
        self.calls.append(("start", first_epoch, total_steps))

    def on_batch(self, run):
        self.calls.append(("batch",))

    def on_step(self, run, record):
        self.calls.append(("step", record["step"]))

    def on_epoch(self, run, record):
        self.calls.append(("epoch", record["epoch"]))

    def on_end(self, run, summary):
        self.calls.append(("end", summary["type"]))

    def close(self, run):
        self.calls.append(("close",))


def test_hooks_see_every_record_in_order(tmp_path):
    rec = Recorder()
    run = train(small(ROOT / "specs" / "mmoe.mtl", rows=600, batch=128), epochs=2,
                out_dir=tmp_path, progress=False, callbacks=[rec])
    records = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    names = [c[0] for c in rec.calls]
    steps_per_epoch = -(-len(run.data.train) // 128)
    assert names[0] == "epoch" and rec.calls[0] == ("epoch", 0)  # the untrained model
    assert rec.calls[1] == ("start", 1, 2 * steps_per_epoch)
    assert names.count("batch") == 2 * steps_per_epoch
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == [0, 1, 2]
    assert [c[1] for c in rec.calls if c[0] == "step"] == \
        [r["step"] for r in records if r["type"] == "step"]
    assert names[-2:] == ["end", "close"]


class Boom(Callback):
    def on_epoch(self, run, record):
        if record["epoch"] == 1:
            raise RuntimeError("boom")


def test_a_failing_callback_fails_the_run_and_still_closes_the_others(tmp_path):
    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        train(small(ROOT / "specs" / "mmoe.mtl", rows=300, batch=128), epochs=2,
              out_dir=tmp_path, progress=False, callbacks=[Boom(), rec])
    assert rec.calls[-1] == ("close",)
    status = json.loads(next(tmp_path.glob("*/status.json")).read_text())
    assert status["status"] == "failed" and "boom" in status["error"]


def test_close_reaches_every_callback_even_if_one_raises():
    class BadClose(Callback):
        def close(self, run):
            raise ValueError("x")

    rec = Recorder()
    with pytest.raises(ValueError):
        Callbacks([BadClose(), rec]).close(None)
    assert rec.calls == [("close",)]
