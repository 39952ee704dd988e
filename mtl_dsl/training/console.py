"""What a person sees while a run trains: a status line until training starts, one line per
epoch (training loss per task, validation metrics, epoch time) and the progress bar.

On a terminal (stderr is a TTY) the epoch lines are aligned columns printed above a rich
progress bar, which stays on screen at the end. Anywhere else (CI logs, pipes, files) there is
no bar and no colour: each epoch is one plain `key=value` line on stderr, because such a log is
read line by line (grep, tail) and a header 300 lines up would not say what a column is.
stdout is left alone either way, so `--json` and the final summary stay machine-readable.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO

from ..data.statistics import collision_line
from .callbacks import Callback

MIN_WIDTH = 8


def fmt(v: float | None) -> str:
    """A value in a table cell: 4 significant digits; a metric that could not be computed
    (NaN, None) is shown as n/a, never as nan."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4g}"


def val_columns(val: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """(task, metric) pairs shown for validation: the metrics, or the loss of a task that
    has no other metric (a task's loss equals its logloss; showing both says nothing)."""
    out = []
    for task, metrics in val.items():
        names = [m for m in metrics if m != "loss"] or [m for m in metrics if m == "loss"]
        out += [(task, m) for m in names]
    return out


def epoch_cells(record: dict, train_tasks: list[str], val_cols: list[tuple[str, str]],
                seconds: float | None) -> dict[str, str]:
    """The cells of one epoch's line, keyed by column name."""
    cells = {"epoch": str(record["epoch"])}
    for t in train_tasks:
        cells[f"train {t}"] = fmt(record["train_loss"].get(t)) if record["train_loss"] else "-"
    for t, m in val_cols:
        cells[f"{t}.{m}"] = fmt(record["val"].get(t, {}).get(m))
    cells["time"] = "-" if seconds is None else f"{seconds:.1f}s"
    return cells


def fit(columns: list[str], width: int) -> list[str]:
    """The columns a terminal row shows: all of them, or when that is wider than the
    terminal, each task's first validation metric only (the spec's first, usually the one
    monitored); the plain lines and metrics.jsonl keep every metric."""
    def wide(cols: list[str]) -> int:
        return sum(max(MIN_WIDTH, len(c)) + 2 for c in cols)

    if wide(columns) <= width:
        return columns
    seen: set[str] = set()
    kept = []
    for c in columns:  # validation columns are TASK.METRIC; the others have no dot
        task = c.split(".", 1)[0]
        if "." not in c or task not in seen:
            kept.append(c)
            seen.add(task)
    return kept


def plain_line(record: dict, epochs: int, cells: dict[str, str]) -> str:
    """The non-terminal form: self-describing `key=value` pairs on one line."""
    train = " ".join(f"{k[6:]}={v}" for k, v in cells.items() if k.startswith("train "))
    val = " ".join(f"{k}={v}" for k, v in cells.items()
                   if k not in ("epoch", "time") and not k.startswith("train "))
    parts = [f"epoch {record['epoch']}/{epochs}"]
    if record["train_loss"]:
        parts.append(f"train {train}")
    parts += [f"val {val}", f"time {cells['time']}"]
    return "  ".join(parts)


class RunConsole(Callback):
    """The run's console on stderr: the epoch lines, the progress bar (terminal only) and
    the end of the status line that `mtl compile --train` shows while importing and loading.

    `status` is a started rich Status (or None); it is stopped at the first hook, when the
    run is about to train. `stream` forces the plain form onto that stream (tests).
    """

    def __init__(self, status: Any = None, stream: TextIO | None = None) -> None:
        self.status = status
        self.stream = stream
        self.console = None
        self.bar = None
        if stream is None and sys.stderr.isatty():
            from .runs import progress

            self.bar = progress(True)
            self.console = self.bar.console if self.bar is not None else None
        self.columns: list[str] | None = None
        self.widths: dict[str, int] = {}
        self.last_elapsed: float | None = None

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def on_start(self, run, first_epoch, total_steps):
        self._stop_status()
        for table, c in run.data.encoders.hashing().items():  # docs/data.md, "Hashing"
            print(collision_line(table, c), file=self.stream or sys.stderr, flush=True)
        if self.last_elapsed is None:  # a resumed run: its first epoch's time counts from here
            self.last_elapsed = run.elapsed()
        if self.bar is not None:
            self.bar.start()
            self.bar.add_task(f"epoch {first_epoch}", total=total_steps, completed=run.step)

    def on_batch(self, run):
        if self.bar is not None:
            self.bar.advance(self.bar.task_ids[0])

    def on_step(self, run, record):
        if self.bar is None:
            return
        shown = " ".join(f"{k}={v:.4g}" for k, v in record["train_loss"].items())
        self.bar.update(self.bar.task_ids[0],
                        description=f"epoch {record['epoch']}/{run.epochs} {shown}")

    def on_epoch(self, run, record):
        self._stop_status()
        seconds = None if record["epoch"] == 0 or self.last_elapsed is None \
            else record["elapsed"] - self.last_elapsed
        self.last_elapsed = record["elapsed"]
        train_tasks = list(record["train_loss"] or record["weights"])
        cells = epoch_cells(record, train_tasks, val_columns(record["val"]), seconds)
        if self.console is None:
            print(plain_line(record, run.epochs, cells), file=self.stream or sys.stderr,
                  flush=True)
            return
        if self.columns is None:
            self.columns = fit(list(cells), self.console.width)
            self.widths = {c: max(MIN_WIDTH, len(c)) for c in self.columns}
            self.console.print(self._row({c: c for c in self.columns}), style="bold",
                               highlight=False)
        self.console.print(self._row(cells), highlight=False)

    def _row(self, cells: dict[str, str]) -> str:
        return "  ".join(cells.get(c, "-").rjust(self.widths[c]) for c in self.columns)

    def close(self, run):
        self._stop_status()
        if self.bar is not None:
            self.bar.stop()  # transient=False: the finished bar stays on screen
