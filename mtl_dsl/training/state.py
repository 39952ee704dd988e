"""Resumable state as plain values, and the atomic writes that keep it whole.

A resumable checkpoint must load with `torch.load(weights_only=True)`, so every value in it
is a dict, list, str, number, bool, None or tensor. Each training object says what its state
is in its own `state_dict()` / `load_state_dict()` (the weighting methods and their
aggregators: docs/weighting.md, "What a resumed run keeps"); this module holds what they
share: :func:`copied` and :func:`fill` for tensors, the random generators' state, and
:func:`atomic_save`, which writes through :func:`mtl_dsl.training.runs.replace_file` (a
temporary file in the target's folder, flush, fsync, `os.replace`): a kill during a write
leaves the previous file whole.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .runs import replace_file


# --------------------------------------------------------------------------
# Tensors in a state
# --------------------------------------------------------------------------

def copied(t: Tensor | None) -> Tensor | None:
    """A detached copy of `t` for a state dict (None stays None): the live tensor may change
    in place after the state is taken."""
    return None if t is None else t.detach().clone()


def fill(param: Tensor, saved: Tensor) -> None:
    """Copy a saved value into a live parameter in place, so an optimizer that holds the
    parameter goes on training it."""
    if param.shape != saved.shape:
        raise ValueError(f"saved shape {tuple(saved.shape)}, live {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(saved)


def moved(t: Tensor | None, device: torch.device | None) -> Tensor | None:
    """A saved tensor on `device` (None: where it was loaded)."""
    return t if t is None or device is None else t.to(device)


# --------------------------------------------------------------------------
# Every random number generator
# --------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators (a run's initialisation and order)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
