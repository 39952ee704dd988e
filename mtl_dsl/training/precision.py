"""`train precision=bf16`: forward and losses under bfloat16 autocast, weights in float32.

Autocast runs the matrix products (linear layers, attention) in bfloat16 and keeps the
numerically fragile ops (losses, softmax, norms, sums) in float32, so the weights, their
gradients and the optimizer state stay float32 (no loss scaling is needed: bfloat16 has
float32's exponent range). The backward pass runs outside the context, as torch advises;
its ops follow the dtypes the forward pass recorded. CPU autocast supports bfloat16 (what
the tests check); on CUDA it is the same call (untested here: no GPU).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import torch

from ..language.ir import Spec


def autocast(spec: Spec, device: torch.device) -> ContextManager:
    """The context a training step's forward pass and losses run in."""
    if spec.train.params.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
