"""training/eager.py: torch's optimizers, the same updates, without importing the compiler."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import ROOT
from mtl_dsl.training.eager import SGD, Adam, AdamW


def trajectory(make, steps: int = 6) -> list[torch.Tensor]:
    """Parameters after each step of a small model on fixed data, with a schedule and a
    state-dict round trip half-way."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    opt = make(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = torch.randn(32, 5), torch.randn(32, 2)
    out = []
    for k in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        sched.step()
        if k == steps // 2:
            opt.load_state_dict(opt.state_dict())
        out.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return out


@pytest.mark.parametrize("ours, theirs, options", [
    (Adam, torch.optim.Adam, {"lr": 1e-2, "fused": True}),
    (Adam, torch.optim.Adam, {"lr": 1e-2, "foreach": True, "weight_decay": 0.1}),
    (AdamW, torch.optim.AdamW, {"lr": 1e-2, "foreach": True}),
    (SGD, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "foreach": True}),
])
def test_the_same_updates_as_torch_bit_for_bit(ours, theirs, options):
    mine = trajectory(lambda p: ours(p, **options))
    reference = trajectory(lambda p: theirs(p, **options))
    assert all(torch.equal(a, b) for a, b in zip(mine, reference))
    assert not torch.equal(mine[0], mine[-1])  # it did train
    assert isinstance(ours([nn.Parameter(torch.zeros(1))], **options), theirs)


def test_a_run_of_optimizer_calls_never_imports_the_compiler():
    code = ("import sys, torch\n"
            "from torch import nn\n"
            "from mtl_dsl.training.eager import Adam\n"
            "m = nn.Linear(3, 1)\n"
            "o = Adam(m.parameters(), lr=0.1, fused=True)\n"
            "for _ in range(3):\n"
            "    o.zero_grad(); m(torch.ones(2, 3)).sum().backward(); o.step()\n"
            "o.load_state_dict(o.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"  # torch's own Adam: True, about 1 s of CPU
    stock = code.replace("from mtl_dsl.training.eager import Adam", "from torch.optim import Adam")
    done = subprocess.run([sys.executable, "-c", stock], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "True"  # what the module is for: torch imports it
