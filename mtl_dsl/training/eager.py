"""torch's Adam, AdamW and SGD without the import of the compiler on their first call.

torch.optim prepares every optimizer for `torch.compile`: `step` is wrapped to insert two
graph breaks (`torch._dynamo.graph_break()`), and `add_param_group`, `zero_grad`,
`state_dict`, `load_state_dict` and the functional updates are wrapped by
`torch._disable_dynamo`. Both wrappers import `torch._dynamo`, the whole compiler, on first
use: about 1 s of CPU, a fifth of a one-epoch `mtl compile --train` on the benchmark of
bench/bench_cli.py. This project never compiles an optimizer, so the classes here run the
very same update functions eagerly: `step` under `torch.no_grad()` (what the wrapper does
for a non-differentiable optimizer, minus the graph breaks, which are no-ops outside
compilation) and each `_disable_dynamo` function recorded as its own exclusion, in the
slot where that wrapper caches it. Hooks, schedulers, state dicts and `isinstance(opt,
torch.optim.Adam)` are those of torch. Where torch stops wrapping this way, the classes
fall back to torch's own methods (the import then simply happens, as before);
tests/test_optim_eager.py checks the trajectories are torch's, bit for bit, and that no
compiler is loaded.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import adam, adamw, optimizer, sgd


def _exempt(fn: object) -> None:
    """Record a `torch._disable_dynamo`-wrapped function as its own exclusion."""
    raw = getattr(fn, "__wrapped__", None)
    if callable(raw) and getattr(raw, "__dynamo_disable", None) is None:
        raw.__dynamo_disable = raw  # type: ignore[attr-defined]


def _exempt_all() -> None:
    if "torch._dynamo" in sys.modules:  # already paid: keep torch's wrappers as they are
        return
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        _exempt(getattr(optimizer.Optimizer, name, None))
    for module, name in ((adam, "adam"), (adamw, "adamw"), (sgd, "sgd")):
        _exempt(getattr(module, name, None))


def _raw_step(cls: type[torch.optim.Optimizer]) -> Callable[..., Any] | None:
    """The class's own update, under torch's step wrappers; None if it is not wrapped."""
    step = inspect.unwrap(cls.step)
    return None if step is cls.step else step


def _eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    raw = _raw_step(cls)
    if raw is None:
        return cls

    def step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        with torch.no_grad():
            return raw(self, closure)

    def __init__(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        _exempt_all()
        cls.__init__(self, *args, **kwargs)

    step.__doc__ = cls.step.__doc__
    return type(cls.__name__, (cls,), {"__init__": __init__, "step": step,
                                       "__module__": __name__, "__doc__": cls.__doc__})


Adam = _eager(torch.optim.Adam)
AdamW = _eager(torch.optim.AdamW)
SGD = _eager(torch.optim.SGD)
