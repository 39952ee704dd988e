"""Early stopping on `train monitor=` with `patience=`, keeping the best weights.

No monitor means the sum of the trained tasks' validation losses (lower is better); a
monitor `TASK.METRIC` follows the metric's direction in the registry (`metrics.better`).
A monitor that cannot be computed on the validation rows (AUC of one class) falls back, said
on stderr and kept in `fallback`, to the validation losses: no epoch is chosen on a NaN.
"""

from __future__ import annotations

import sys

from torch import Tensor, nn

from .metrics import Undefined, better


class EarlyStopping:
    """The best epoch so far, its score and a copy of the model's weights at that epoch."""

    def __init__(self, model: nn.Module, monitor: str | None, patience: int | None,
                 trained: list[str]):
        self.model, self.patience, self.trained = model, patience, trained
        task, _, metric = (monitor or "").partition(".")
        self.task: str | None = task or None
        self.metric = metric if monitor else "loss"
        self.best_score: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] | None = None
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
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
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
                "best_state": self.best_state, "task": self.task, "metric": self.metric,
                "fallback": self.fallback}

    def load_state_dict(self, saved: dict) -> None:
        self.best_score, self.best_epoch = saved["best_score"], saved["best_epoch"]
        self.bad, self.best_state = saved["bad"], saved["best_state"]
        self.task, self.metric = saved["task"], saved["metric"]
        self.fallback = saved["fallback"]

    def restore(self) -> None:
        """Load the best epoch's weights back (nothing when no epoch was trained)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
