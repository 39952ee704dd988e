"""Adam's step on the CPU, fused against foreach (training/optim.py picks fused where torch
has it): microseconds per step for parameter sets of MMoE's and of wider models, and how far
the two kernels' weights drift apart (both are deterministic run to run; they differ from
each other by float rounding).

    python bench/bench_optimizer.py
"""

from __future__ import annotations

import time

import torch
from torch import nn

SHAPES = ((64, 20), (256, 20), (512, 8))  # (width, layers): width x width weights + biases
STEPS = 200


def parameters(width: int, layers: int) -> list[nn.Parameter]:
    torch.manual_seed(0)
    ps = [nn.Parameter(torch.randn(width, width)) for _ in range(layers)]
    ps += [nn.Parameter(torch.randn(width)) for _ in range(layers)]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


def time_steps(mode: str, width: int, layers: int) -> tuple[float, torch.Tensor]:
    """Best of three: microseconds per Adam step, and the first weight after the steps."""
    best, weight = float("inf"), None
    for _ in range(3):
        ps = parameters(width, layers)
        opt = torch.optim.Adam(ps, lr=1e-3, **{mode: True})
        for _ in range(5):
            opt.step()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            opt.step()
        best = min(best, (time.perf_counter() - t0) / STEPS * 1e6)
        weight = ps[0].detach().clone()
    return best, weight


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {STEPS} steps, best of 3")
    for width, layers in SHAPES:
        foreach, a = time_steps("foreach", width, layers)
        fused, b = time_steps("fused", width, layers)
        print(f"{layers} x ({width}x{width} + {width}): foreach {foreach:8.0f} us/step, "
              f"fused {fused:8.0f} us/step ({foreach / fused:.1f}x); "
              f"max |fused - foreach| after {STEPS + 5} steps {float((a - b).abs().max()):.1e}")


if __name__ == "__main__":
    main()
