"""Divergence beyond NaN: a training loss that explodes while it is still a finite number.

A learning rate far too high (`lr=1e6` on ESMM) drives the losses to 1e34 without ever
reaching NaN, and the run used to end "fine" with an AUC of 0.5. The detector compares each
logged interval's mean training loss (LOG_POINTS_PER_EPOCH per epoch) with the untrained
model's validation loss of the same task (epoch 0, the same loss on the same scale): FACTOR
times above it, for PATIENCE consecutive intervals, is divergence (E702). A non-finite loss is
divergence at once. Losses only fall in a sound run, so the reference is generous: a noisy
batch does not trip it, and the floor keeps a tiny starting loss (a regression label near 0)
from making ordinary noise look like growth.
"""

from __future__ import annotations

import math

from ..language.diagnostics import DataError

FACTOR = 1e3  # an interval's loss this many times the untrained loss is an explosion
PATIENCE = 3  # consecutive exploded intervals before training stops
FLOOR = 1.0  # reference losses below this count as this


class Divergence:
    """Per-task loss limits from the untrained model's validation losses, and how many
    intervals in a row exceeded them."""

    def __init__(self, reference: dict[str, float], lr: float, factor: float = FACTOR,
                 patience: int = PATIENCE):
        self.reference = {t: v for t, v in reference.items() if math.isfinite(v)}
        self.limit = {t: factor * max(abs(v), FLOOR) for t, v in self.reference.items()}
        self.lr, self.factor, self.patience = lr, factor, patience
        self.exploded = 0

    @classmethod
    def of(cls, untrained: dict[str, dict[str, float]], lr: float) -> "Divergence":
        """From the epoch-0 validation metrics (`{task: {"loss": ..., ...}}`)."""
        return cls({t: float(m["loss"]) for t, m in untrained.items()}, lr)

    def check(self, losses: dict[str, float], epoch: int, step: int) -> None:
        """One interval's mean training losses; E702 when training has diverged."""
        for task, v in losses.items():
            if not math.isfinite(v):
                raise self._error(f"the loss of '{task}' is {v}", epoch, step)
        above = [t for t in self.limit if losses.get(t, 0.0) > self.limit[t]]
        self.exploded = self.exploded + 1 if above else 0
        if self.exploded >= self.patience:
            t = above[0]
            raise self._error(f"the loss of '{t}' is {losses[t]:.3g}, over "
                              f"{self.factor:g} times the untrained model's "
                              f"{self.reference[t]:.3g}, for {self.exploded} logged intervals "
                              "in a row", epoch, step)

    def _error(self, what: str, epoch: int, step: int) -> DataError:
        return DataError(f"training diverged: {what} (epoch {epoch}, step {step})",
                         code="E702",
                         hint=f"lower `train lr=` (it is {self.lr:g}); give large inputs "
                              "norm=standard or norm=log; check the labels' scale")


def check_finite(losses: dict[str, float], epoch: int) -> None:
    """E702 when an epoch's mean training loss is not a finite number."""
    for task, v in losses.items():
        if not math.isfinite(v):
            raise DataError(f"training diverged: the loss of task '{task}' is {v} in "
                            f"epoch {epoch}", code="E702",
                            hint="try a lower lr= or norm= on the features")
