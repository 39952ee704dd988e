"""What the training loop tells the world while it runs: the hooks it calls.

The loop (:mod:`mtl_dsl.training.loop`) owns the arithmetic; everything that only watches a
run (the console with its progress bar and epoch lines, :mod:`mtl_dsl.training.console`;
trackers such as TensorBoard or MLflow, :mod:`mtl_dsl.training.trackers`;
diagnostics drawn from the records) is a :class:`Callback`, so adding one never touches the
loop. Records are the dicts written to metrics.jsonl, so a callback sees exactly what the run
folder keeps. A callback must not change the model, the optimizer or the data: a resumed run
has to end bit for bit where the uninterrupted one does, whatever watched it.
"""

from __future__ import annotations

from typing import Any, Iterable


class Callback:
    """Every hook is optional; the loop calls them in this order.

    `on_start(run, first_epoch, total_steps)` once the run folder exists (also on resume);
    `on_batch(run)` after each optimizer step; `on_step(run, record)` for each step-interval
    record; `on_epoch(run, record)` for each epoch record, after validation (epoch 0 is the
    untrained model); `on_end(run, summary)` with the end record when training finished;
    `close(run)` always, last, also when the run failed or was interrupted.
    """

    def on_start(self, run: Any, first_epoch: int, total_steps: int) -> None:
        pass

    def on_batch(self, run: Any) -> None:
        pass

    def on_step(self, run: Any, record: dict) -> None:
        pass

    def on_epoch(self, run: Any, record: dict) -> None:
        pass

    def on_end(self, run: Any, summary: dict) -> None:
        pass

    def close(self, run: Any) -> None:
        pass


class Callbacks(Callback):
    """Several callbacks as one; `close` reaches every callback even if one raises."""

    def __init__(self, items: Iterable[Callback] = ()) -> None:
        self.items = [c for c in items if c is not None]

    def on_start(self, run, first_epoch, total_steps):
        for c in self.items:
            c.on_start(run, first_epoch, total_steps)

    def on_batch(self, run):
        for c in self.items:
            c.on_batch(run)

    def on_step(self, run, record):
        for c in self.items:
            c.on_step(run, record)

    def on_epoch(self, run, record):
        for c in self.items:
            c.on_epoch(run, record)

    def on_end(self, run, summary):
        for c in self.items:
            c.on_end(run, summary)

    def close(self, run):
        error = None
        for c in self.items:
            try:
                c.close(run)
            except Exception as err:  # noqa: BLE001 - the others still close; re-raised below
                error = error or err
        if error is not None:
            raise error

