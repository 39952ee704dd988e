"""Loss weighting, `L = sum_i w_i L_i` (docs/weighting.md), as small classes.

One interface for every method the registry names (`weighting WORD(...)` in a spec):

* `attach(groups)` once before training, with the model's :class:`ParamGroups` (the
  weighting never sees the model itself);
* `keeps()`: the shared blocks whose outputs the method needs from each training forward
  (representation balancing); the loop runs `model.forward_keeping(batch, keeps())` and
  passes those tensors to `step`;
* `step(losses, kept)` returns the total the model backpropagates (updating the method's
  own state on the way); gradient methods return a surrogate whose gradient is their
  combined update (:mod:`mtl_dsl.training.weighting.balancing`);
* `weights()` the current effective weight of each task, dtotal/dL_i (for a gradient method:
  the coefficient of each task's gradient in the update), and `interval_weights()` their mean
  since the last call, which the training log records;
* `parameters()` the extra parameters the model's optimizer trains (UWL's, IMTL-L's);
* hooks the training loop calls: `after_step(recompute)` after each optimizer step (FAMO
  measures the new losses), `end_epoch(mean_losses)` (DWA, STCH);
* `state_dict()` / `load_state_dict(d)`: everything the method has learnt or accumulated,
  so a resumed run continues bit for bit. Each class writes its own fields in `_state()` and
  reads them back in `_load()`, its parent's first (tensors and numbers only: resume.pt loads
  with `weights_only=True`; a gradient method adds its aggregator's `state_dict()`);
  `state_dict()["weights"]` is the readable summary a checkpoint shows.

Which class implements a method is stated once, keyed by the method's registry name
(training/weighting/methods.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...language import registry as reg
from ..state import copied, moved
from ..groups import ParamGroups


class Weighting:
    """Fixed weights: each task's `weight=` (1 by default)."""

    def __init__(self, weights: dict[str, float]):
        self.tasks = list(weights)
        self.fixed = dict(weights)
        self._w = dict(weights)
        self._last: Tensor | None = None
        self._sum: Tensor | None = None
        self._n = 0

    @classmethod
    def from_params(cls, p: reg.WeightingParams, fixed: dict[str, float]) -> "Weighting":
        """The method from its parameter model and the tasks' weight= (the registry's way)."""
        return cls(fixed)

    # ---- hooks -----------------------------------------------------------

    def attach(self, groups: ParamGroups) -> None:
        """Called once with the model's parameter groups before training."""

    def keeps(self) -> tuple[str, ...]:
        """The shared blocks whose outputs `step` needs (none but for representation balancing)."""
        return ()

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        """Called after each optimizer step; `recompute()` gives the batch's losses again."""

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called after each epoch with the epoch's mean training loss of each task."""

    def parameters(self) -> list[nn.Parameter]:
        return []

    # ---- the step ----------------------------------------------------------

    def step(self, losses: dict[str, Tensor], kept: dict[str, Tensor] | None = None) -> Tensor:
        """The total to backpropagate; `kept` holds the outputs `keeps()` asked for."""
        return sum(self._w[t] * losses[t] for t in self.tasks)

    def _stack(self, losses: dict[str, Tensor]) -> Tensor:
        return torch.stack([losses[t] for t in self.tasks])  # (K,)

    def _c(self, like: Tensor) -> Tensor:
        """The fixed weights as a (K,) tensor next to `like`."""
        return torch.tensor([self.fixed[t] for t in self.tasks], dtype=like.dtype,
                            device=like.device)

    def _note(self, w: Tensor) -> None:
        """Record this step's effective weights (K,)."""
        w = w.detach()
        self._last = w
        self._sum = w.clone() if self._sum is None else self._sum + w
        self._n += 1

    # ---- what is logged ----------------------------------------------------

    def weights(self) -> dict[str, float]:
        if self._last is None:
            return dict(self._w)
        return dict(zip(self.tasks, self._last.tolist()))

    def interval_weights(self) -> dict[str, float]:
        """Mean effective weights over the steps since the previous call."""
        if not self._n:
            return self.weights()
        mean = (self._sum / self._n).tolist()
        self._sum, self._n = None, 0
        return dict(zip(self.tasks, mean))

    def state_dict(self) -> dict:
        """The readable weights and the resumable state (see the module docstring)."""
        return {"weights": self.weights(), "state": self._state()}

    def load_state_dict(self, saved: dict, device: torch.device | None = None) -> None:
        """Put back what `state_dict()` saved; parameters are filled in place, so the
        optimizer that trains them keeps them."""
        self._load(saved["state"], device)

    def _state(self) -> dict:
        """This class's fields of the resumable state: here the logged weights' running sums.
        A subclass adds its own to its parent's."""
        return {"last": copied(self._last), "sum": copied(self._sum), "n": self._n}

    def _load(self, state: dict, device: torch.device | None) -> None:
        """Read back the fields `_state` wrote (a subclass: its parent's first)."""
        self._last, self._sum = moved(state["last"], device), moved(state["sum"], device)
        self._n = int(state["n"])

    def to(self, device) -> "Weighting":
        """Move the scheme's own parameters (in place, so optimizers keep them)."""
        for v in vars(self).values():
            if isinstance(v, nn.Parameter):
                v.data = v.data.to(device)
        return self
