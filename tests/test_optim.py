"""training/optim.py with torch.optim's own classes: fused Adam where torch runs it (found by
asking torch, not from its private device list), trajectories that survive a state-dict round
trip bit for bit, and every public normalisation layer of torch.nn kept out of weight decay."""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

from mtl_dsl.model.blocks import ExpertNorm
from mtl_dsl.training.optim import NORMS, DecayGroups, fused_available


def test_fused_adam_is_found_where_torch_runs_it_and_not_elsewhere():
    assert fused_available(torch.device("cpu"))  # torch >= 2.4 (the pins: 2.13)
    assert not fused_available(torch.device("meta"))  # torch refuses fused=True there


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))


def _train(model, opt, sched, x, y, steps: int) -> list[torch.Tensor]:
    out = []
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        sched.step()
        out.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return out


def _saved(*objects) -> list[dict]:
    """State dicts through torch.save and torch.load(weights_only=True), as resume.pt."""
    buf = io.BytesIO()
    torch.save([o.state_dict() for o in objects], buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("cls, options", [
    (torch.optim.Adam, {"lr": 1e-2, "fused": True}),
    (torch.optim.Adam, {"lr": 1e-2, "foreach": True, "weight_decay": 0.1}),
    (torch.optim.AdamW, {"lr": 1e-2, "fused": True}),
    (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "foreach": True}),
])
def test_a_trajectory_resumed_from_state_dicts_is_bit_identical(cls, options):
    """Six steps with a schedule, against three, a round trip of every state into fresh
    objects, and three more."""
    x, y = torch.randn(32, 5, generator=torch.Generator().manual_seed(1)), torch.zeros(32, 2)

    def fresh():
        model = _model()
        opt = cls(model.parameters(), **options)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    whole = _train(*fresh(), x, y, 6)
    model, opt, sched = fresh()
    first = _train(model, opt, sched, x, y, 3)
    saved = _saved(model, opt, sched)
    model2, opt2, sched2 = fresh()
    for obj, state in zip((model2, opt2, sched2), saved):
        obj.load_state_dict(state)
    rest = _train(model2, opt2, sched2, x, y, 3)
    assert all(torch.equal(a, b) for a, b in zip(whole, first + rest))
    assert not torch.equal(whole[0], whole[-1])  # it did train


def _public_norms() -> list[type]:
    pattern = re.compile(r"Norm([123]d)?$")
    return [getattr(nn, n) for n in dir(nn) if pattern.search(n) and not n.startswith("_")
            and isinstance(getattr(nn, n), type) and issubclass(getattr(nn, n), nn.Module)]


def test_every_public_norm_layer_of_torch_nn_is_listed():
    found = _public_norms()
    assert nn.BatchNorm1d in found and nn.RMSNorm in found and len(found) >= 15
    missing = [c.__name__ for c in found if not issubclass(c, NORMS)]
    assert not missing, f"add {missing} to training/optim.py's NORMS"
    assert ExpertNorm in NORMS


def test_a_norms_matrix_scale_is_never_decayed():
    """A LayerNorm over (4, 5) has a 2-D scale: it is a norm's, not a weight to decay."""
    model = nn.Sequential(nn.Linear(5, 20), nn.Unflatten(1, (4, 5)), nn.LayerNorm((4, 5)),
                          nn.Flatten(), nn.Linear(20, 1))
    groups = DecayGroups.of(model)
    norm = model[2]
    assert norm.weight.ndim == 2
    assert any(p is norm.weight for p in groups.plain)
    assert not any(p is norm.weight for p in groups.decay)
    assert [p.shape for p in groups.decay] == [(20, 5), (1, 20)]
