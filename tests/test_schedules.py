"""Learning-rate schedules, gradient clipping and weight-decay groups (training/schedules.py,
training/optim.py): the shapes of the rates, the groups each parameter lands in, and a short
run that logs the rate of every step."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mtl_dsl.api import check_text
from mtl_dsl.model.compiler import compile_model
from mtl_dsl.training.loop import train
from mtl_dsl.training.weighting.methods import make
from mtl_dsl.training.optim import (DecayGroups, clip_gradients, load_optimizer, make_optimizer,
                                    param_groups)
from mtl_dsl.training.resume import ResumeError
from mtl_dsl.training.schedules import Schedule

SPEC = """model s
data synthetic.funnel(rows=300, seed=1)
feature user = sparse(dim=4)
feature d = dense(4)
label click, purchase
input x = concat(user, d)
experts e[2] = mlp(x, 8, norm=layer)
gate g_a = softmax(x) over e
gate g_b = softmax(x) over e
tower t_a = mlp(g_a, 4, norm=batch)
tower t_b = mlp(g_b, 4)
task a: binary(label=click) from t_a
task b: binary(label=purchase) from t_b
weighting uncertainty
"""


def spec_with(train: str):
    checked = check_text(SPEC + "train " + train + "\n")
    assert not [d for d in checked.diagnostics if d.severity == "error"], checked.diagnostics
    return checked.spec


def rates(train: str, epochs: int, steps_per_epoch: int) -> list[float]:
    s = Schedule(spec_with(train), epochs, steps_per_epoch)
    return [s.rate(t) for t in range(epochs * steps_per_epoch)]


def test_warmup_then_cosine_reaches_min_lr_at_the_last_step():
    lr = rates("epochs=4 lr=0.01 schedule=cosine warmup=5 min_lr=0.001", 4, 10)
    assert lr[:5] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01])
    assert lr[5] == pytest.approx(0.01)
    after = lr[5:]
    assert all(a >= b for a, b in zip(after, after[1:]))  # never rises after the warm-up
    assert lr[-1] == pytest.approx(0.001) and min(lr) == pytest.approx(0.001)
    mid = 5 + (40 - 1 - 5) / 2  # halfway through the cosine: halfway between lr and min_lr
    assert lr[int(mid)] > 0.0055 > lr[int(mid) + 1]


def test_warmup_in_epochs_and_linear_decay():
    lr = rates("epochs=3 lr=0.01 schedule=linear warmup_epochs=1", 3, 4)
    assert lr[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert lr[4:] == pytest.approx([0.01 * (1 - k / 7) for k in range(8)])


def test_step_schedule_decays_every_step_size_epochs_down_to_min_lr():
    lr = rates("epochs=6 lr=0.1 schedule=step step_size=2 gamma=0.5 min_lr=0.02", 6, 3)
    per_epoch = [lr[e * 3] for e in range(6)]
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert lr[:3] == pytest.approx([0.1] * 3)  # constant within an epoch
    lr = rates("epochs=8 lr=0.1 schedule=step step_size=1 gamma=0.5 min_lr=0.02", 8, 1)
    assert lr[-1] == pytest.approx(0.02)


def test_plateau_decays_after_lr_patience_epochs_without_improvement():
    s = Schedule(spec_with("lr=0.1 schedule=plateau lr_patience=2 factor=0.5 min_lr=0.03"), 9, 5)
    seen = []
    for improved in [True, False, True, False, False, False, False, False, False]:
        s.end_epoch(improved)
        seen.append(s.rate(20))
    # one bad epoch is forgiven by the next good one; two in a row decay; the floor holds
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03])
    restored = Schedule(spec_with("lr=0.1 schedule=plateau"), 9, 5)
    restored.load_state_dict(s.state_dict())
    assert restored.state_dict() == s.state_dict()


def test_a_run_logs_the_rate_of_its_steps_warmup_then_step_decay(tmp_path):
    spec = spec_with("epochs=2 batch=64 lr=0.01 schedule=step step_size=1 gamma=0.5 "
                     "clip=1.0 warmup=2 seed=3")
    r = train(spec, out_dir=tmp_path, progress=False)
    steps = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["type"] == "step"]
    per = math.ceil(len(r.data.train) / 64)
    lr = {s["step"]: s["lr"] for s in steps}
    assert lr[1] == pytest.approx(0.005)  # step 0 of the warm-up: lr * 1/2
    assert lr[per] == pytest.approx(0.01) and lr[2 * per] == pytest.approx(0.005)
    assert Schedule(spec_with("lr=0.01"), 2, per).rate(2 * per - 1) == 0.01


def test_clipping_bounds_the_global_norm():
    torch.manual_seed(0)
    spec = spec_with("clip=0.5")
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 1))
    (model(torch.randn(32, 8) * 100).pow(2).sum()).backward()
    before = clip_gradients(spec, model)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert before > 10 and float(after) == pytest.approx(0.5, rel=1e-5)
    assert clip_gradients(spec_with("epochs=2"), model) is None  # no clip=: untouched


def test_decay_applies_to_weights_only():
    spec = spec_with("weight_decay=0.1 embedding_l2=0.001")
    model = compile_model(spec, vocab_sizes={"user": 20})
    scheme = make(spec)
    groups = {g["name"]: g for g in param_groups(spec, model, scheme)}
    assert set(groups) == {"weights", "biases and norms", "embeddings", "weighting"}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[i] for i in ids["weights"]}
    assert decayed and all(not n.endswith("bias") for n in decayed)
    assert not any(".norms." in n or "bn" in n for n in decayed), decayed
    plain = {names[i] for i in ids["biases and norms"]}
    assert any(n.endswith("bias") for n in plain) and any("norm" in n for n in plain)
    tables = [p for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]
    assert tables and {id(p) for p in tables} == ids["embeddings"]
    assert ids["weighting"] == {id(p) for p in scheme.parameters()}
    assert groups["weights"]["weight_decay"] == 0.1
    assert groups["embeddings"]["weight_decay"] == 0.001
    assert groups["biases and norms"]["weight_decay"] == groups["weighting"]["weight_decay"] == 0
    every = [i for g in ids.values() for i in g]  # each trainable parameter exactly once
    assert len(every) == len(set(every)) == len(list(model.parameters())) + \
        len(scheme.parameters())
    assert DecayGroups.of(model).embeddings == tuple(tables)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_is_fused_on_cpu_where_torch_has_it(optimizer):
    spec = spec_with(f"optimizer={optimizer}")
    model = compile_model(spec, vocab_sizes={"user": 20})
    opt = make_optimizer(spec, model, make(spec))
    assert opt.defaults["fused"] is True and not opt.defaults["foreach"]
    sgd = make_optimizer(spec_with("optimizer=sgd"), model, make(spec))
    assert sgd.defaults["foreach"] is True


def test_rates_stay_finite_for_a_one_step_run():
    assert all(math.isfinite(r) for r in rates("epochs=1 schedule=cosine", 1, 1))


def test_an_optimizer_state_from_before_the_decay_groups_is_moved_to_them():
    """resume.pt of an older run: one group of every model parameter, one of the weighting's;
    Adam's moments of each parameter follow it into today's groups."""
    spec = spec_with("weight_decay=0.1")
    model = compile_model(spec, vocab_sizes={"user": 20})
    scheme = make(spec)
    params = [q for q in model.parameters() if q.requires_grad]
    old = torch.optim.Adam([{"params": params, "weight_decay": 0.1},
                            {"params": scheme.parameters(), "weight_decay": 0.0}], lr=0.01)
    for q in params + scheme.parameters():
        q.grad = torch.randn_like(q)
    old.step()
    new = make_optimizer(spec, model, scheme)
    assert len(new.param_groups) == 4
    load_optimizer(new, old.state_dict(), model, scheme)
    for q in params + scheme.parameters():
        assert torch.equal(new.state[q]["exp_avg"], old.state[q]["exp_avg"])
        assert torch.equal(new.state[q]["exp_avg_sq"], old.state[q]["exp_avg_sq"])
    decays = {g["name"]: g["weight_decay"] for g in new.param_groups}
    assert decays == {"weights": 0.1, "biases and norms": 0.0, "embeddings": 0.0,
                      "weighting": 0.0}
    with pytest.raises(ResumeError, match="do not match"):
        load_optimizer(new, {"state": {}, "param_groups": [{"params": [0, 1]}]}, model, scheme)
