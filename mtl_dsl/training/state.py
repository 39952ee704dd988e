"""Resumable state as plain values, and the atomic writes that keep it whole.

A resumable checkpoint must load with `torch.load(weights_only=True)`, so every value in it
is a dict, list, str, number, bool, None or tensor. :func:`encode` turns the state a training
object holds (tensors, parameters, optimizers, numpy arrays, dtypes, and the small objects of
the weighting methods and their torchjd aggregators) into such values, each tagged with what
it was; :func:`restore` puts them back *into the live object*, in place where it matters
(a parameter keeps its identity, so the optimizer that holds it still trains it).

:func:`atomic_save` writes through :func:`mtl_dsl.training.runs.replace_file` (a temporary
file in the target's folder, flush, fsync, `os.replace`): a kill during a write leaves the
previous file whole.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .runs import replace_file

_MODULE_KEYS = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping, never state
_OURS = ("mtl_dsl.", "torchjd.")  # objects whose attributes are walked


# --------------------------------------------------------------------------
# Values <-> plain containers
# --------------------------------------------------------------------------

def encode(value: Any) -> dict | None:
    """`value` as a tagged plain dict, or None for what is not state (a solver, a hook)."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().clone()}
    if isinstance(value, torch.optim.Optimizer):
        return {"optimizer": value.state_dict()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, np.ndarray):
        return {"ndarray": torch.from_numpy(value.copy()), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return {"value": value.item()}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, (list, tuple)):
        items = [encode(v) for v in value]
        if any(i is None for i in items):
            return None
        return {"list" if isinstance(value, list) else "tuple": items}
    if callable(value) and getattr(value, "__closure__", None) and \
            value.__module__.startswith(_OURS):  # an aggregator written as a closure
        return {"closure": [encode(c.cell_contents) for c in value.__closure__]}
    if type(value).__module__.startswith(_OURS):
        return {"object": {k: e for k, v in _fields(value).items()
                           if (e := encode(v)) is not None}}
    return None


def _fields(obj: Any) -> dict[str, Any]:
    """An object's attributes; for a module, its own ones, its buffers, parameters and child
    modules (torchjd keeps running values such as GradVac's in buffers)."""
    own = {k: v for k, v in vars(obj).items() if k not in _MODULE_KEYS}
    if isinstance(obj, nn.Module):
        own |= obj._buffers | obj._parameters | dict(obj.named_children())
    return own


def restore(current: Any, saved: dict, device: torch.device | None = None) -> Any:
    """The value `saved` encodes; tensors, parameters, optimizers and objects that exist
    (`current`) are filled in place and returned."""
    if "tensor" in saved:
        t = saved["tensor"].to(device) if device is not None else saved["tensor"]
        if isinstance(current, torch.Tensor) and current.shape == t.shape:
            with torch.no_grad():
                current.copy_(t)
            return current
        return t
    if "optimizer" in saved:
        current.load_state_dict(saved["optimizer"])
        return current
    if "value" in saved:
        return saved["value"]
    if "ndarray" in saved:
        return saved["ndarray"].numpy().astype(saved["dtype"])
    if "dtype" in saved:
        return getattr(torch, saved["dtype"])
    if "device" in saved:
        return torch.device(saved["device"])
    if "list" in saved or "tuple" in saved:
        items = saved.get("list", saved.get("tuple"))
        old = list(current) if isinstance(current, (list, tuple)) and \
            len(current) == len(items) else [None] * len(items)
        out = [restore(c, s, device) for c, s in zip(old, items)]
        return out if "list" in saved else tuple(out)
    if "closure" in saved:
        for cell, s in zip(current.__closure__, saved["closure"]):
            if s is not None and not ("value" in s):
                cell.cell_contents = restore(cell.cell_contents, s, device)
        return current
    fields = _fields(current)
    for k, s in saved["object"].items():
        value = restore(fields.get(k), s, device)
        if value is not fields.get(k):
            setattr(current, k, value)
    return current


# --------------------------------------------------------------------------
# Every random number generator
# --------------------------------------------------------------------------

def rng_state(generator: torch.Generator) -> dict:
    """torch (CPU and CUDA), numpy, python `random` and the data order generator."""
    kind, keys, pos, gauss, cached = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, gauss, cached],
            "python": [version, list(internal), py_gauss],
            "data": generator.get_state()}


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, gauss, cached))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    generator.set_state(state["data"])


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------

def atomic_save(obj: Any, path: Path) -> int:
    """`torch.save(obj)` atomically; returns the file's size in bytes. Saved straight into
    the temporary file: a buffer first would copy every tensor twice more in memory."""
    size = 0

    def write(f) -> None:
        nonlocal size
        torch.save(obj, f)
        size = f.tell()

    replace_file(path, write)
    return size
