"""The learning rate of every step: `train schedule=`, `warmup=`, `min_lr=` and their kin.

The rate is a pure function of the step, the run's length and, for `plateau`, the number of
decays so far, so a resumed run computes the same rates as the run that never stopped: the
only state (:meth:`Schedule.state_dict`, saved in resume.pt) is the plateau's counters.

    warm-up     step t < W: lr * (t + 1) / W  (W = warmup=, or warmup_epochs= x steps/epoch)
    constant    lr
    linear      lr -> min_lr in a straight line from the end of warm-up to the last step
    cosine      min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2; the last step: min_lr
    step        lr * gamma ^ (epoch // step_size), at least min_lr  (epochs counted from 0)
    plateau     lr * factor ^ decays, at least min_lr; one decay after `lr_patience=` epochs
                without improvement of the monitor (the epochs early stopping watches)

`epochs=` stays an upper bound: early stopping (`patience=`) may end the run before a
linear or cosine schedule reaches min_lr. A resume with another `epochs=` stretches the
schedule from the step it resumes at.
"""

from __future__ import annotations

import math

import torch

from ..language.ir import Spec


class Schedule:
    """The learning rate per step of one run, applied to every parameter group."""

    def __init__(self, spec: Spec, epochs: int, steps_per_epoch: int):
        self.p = spec.train.params
        self.steps_per_epoch = steps_per_epoch
        self.total = epochs * steps_per_epoch
        self.warmup = self.p.warmup or self.p.warmup_epochs * steps_per_epoch
        self.decays = 0  # plateau: decays so far
        self.bad = 0  # plateau: epochs without improvement since the last decay

    def rate(self, step: int) -> float:
        """The learning rate of step `step` (0-based, counted over the whole run)."""
        p = self.p
        if step < self.warmup:
            return p.lr * (step + 1) / self.warmup
        if p.schedule in ("linear", "cosine"):
            span = max(1, self.total - 1 - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
            shape = 1 - progress if p.schedule == "linear" else \
                (1 + math.cos(math.pi * progress)) / 2
            return p.min_lr + (p.lr - p.min_lr) * shape
        if p.schedule == "step":
            return max(p.min_lr, p.lr * p.gamma ** (step // self.steps_per_epoch // p.step_size))
        if p.schedule == "plateau":
            return max(p.min_lr, p.lr * p.factor ** self.decays)
        return p.lr

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set step `step`'s rate on every group of `optimizer`; returns it."""
        lr = self.rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_epoch(self, improved: bool) -> None:
        """Plateau: count an epoch of the monitor; decay after `lr_patience` bad ones."""
        if self.p.schedule != "plateau":
            return
        self.bad = 0 if improved else self.bad + 1
        if self.bad >= self.p.lr_patience:
            self.decays, self.bad = self.decays + 1, 0

    def state_dict(self) -> dict:
        return {"decays": self.decays, "bad": self.bad}

    def load_state_dict(self, saved: dict) -> None:
        self.decays, self.bad = saved["decays"], saved["bad"]
