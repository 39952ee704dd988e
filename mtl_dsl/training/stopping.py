"""Early stopping on `train monitor=` with `patience=`, keeping the best weights.

No monitor means the sum of the trained tasks' validation losses (lower is better); a
monitor `TASK.METRIC` follows the metric's direction in the registry (`metrics.better`).
"""

from __future__ import annotations

from torch import Tensor, nn

from .metrics import better


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

    def score(self, metrics: dict[str, dict[str, float]]) -> float:
        """The monitored metric, or the sum of the validation losses of the trained tasks."""
        if self.task is None:
            return float(sum(metrics[t]["loss"] for t in self.trained))
        return metrics[self.task][self.metric]

    def update(self, epoch: int, metrics: dict[str, dict[str, float]]) -> bool:
        """Take an epoch's validation metrics; True when training should stop."""
        score = self.score(metrics)
        if better(self.metric, score, self.best_score):
            self.best_score, self.best_epoch, self.bad = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict:
        """What a resumed run needs to go on choosing and stopping as this one would."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad": self.bad,
                "best_state": self.best_state}

    def load_state_dict(self, saved: dict) -> None:
        self.best_score, self.best_epoch = saved["best_score"], saved["best_epoch"]
        self.bad, self.best_state = saved["bad"], saved["best_state"]

    def restore(self) -> None:
        """Load the best epoch's weights back (nothing when no epoch was trained)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
