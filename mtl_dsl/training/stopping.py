"""Early stopping on `train monitor=` with `patience=`: the best epoch and its score.

The best epoch's weights are not copied in memory (a second copy of every embedding table):
the training loop writes them to checkpoint.pt when the epoch improves and reads them back
from there at the end (training/loop.py `_restore_best`).

No monitor means the sum of the trained tasks' validation losses (lower is better); a
monitor `TASK.METRIC` follows the metric's direction in the registry (`metrics.better`).
A monitor that cannot be computed on the validation rows (AUC of one class) falls back, said
on stderr and kept in `fallback`, to the validation losses: no epoch is chosen on a NaN.
"""

from __future__ import annotations

import sys

from .metrics import Undefined, better


class EarlyStopping:
    """The best epoch so far and its score."""

    def __init__(self, monitor: str | None, patience: int | None, trained: list[str]):
        self.patience, self.trained = patience, trained
        task, _, metric = (monitor or "").partition(".")
        self.task: str | None = task or None
        self.metric = metric if monitor else "loss"
        self.best_score: float | None = None
        self.best_epoch = 0
        self.bad = 0  # epochs since the last improvement
        self.fallback: str | None = None  # why the monitor was replaced, if it was

    def score(self, metrics: dict[str, dict[str, float]]) -> float:
        """The monitored metric, or the sum of the validation losses of the trained tasks."""
        if self.task is None:
            losses = [metrics[t]["loss"] for t in self.trained]
            defined = [v for v in losses if not isinstance(v, Undefined)]  # e.g. no where= rows
            return float(sum(defined)) if defined else float("nan")
        return metrics[self.task][self.metric]

    def update(self, epoch: int, metrics: dict[str, dict[str, float]]) -> bool:
        """Take an epoch's validation metrics; True when training should stop."""
        score = self.score(metrics)
        if isinstance(score, Undefined) and self.best_score is None:
            self._fall_back(score.reason)
            score = self.score(metrics)
        if better(self.metric, score, self.best_score):
            self.best_score, self.best_epoch, self.bad = score, epoch, 0
            return False
        self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def _fall_back(self, reason: str) -> None:
        """Choose epochs by the validation losses, and say so, for the rest of the run."""
        self.fallback = (f"the monitor {self.task}.{self.metric} cannot be computed on the "
                         f"validation rows ({reason}); the epoch is chosen by the sum of the "
                         "validation losses instead")
        print(f"note: {self.fallback}", file=sys.stderr)
        self.task, self.metric = None, "loss"

    def state_dict(self) -> dict:
        """What a resumed run needs to go on choosing and stopping as this one would."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad": self.bad,
                "task": self.task, "metric": self.metric, "fallback": self.fallback}

    def load_state_dict(self, saved: dict) -> None:
        self.best_score, self.best_epoch = saved["best_score"], saved["best_epoch"]
        self.bad = saved["bad"]
        self.task, self.metric = saved["task"], saved["metric"]
        self.fallback = saved["fallback"]
