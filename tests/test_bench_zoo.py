"""bench/bench_zoo.py's hand-fused reference computes what plain PyTorch does, and a group
of one expert (the shared bottom's fast path in model/blocks.py) backpropagates like an MLP."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn

from mtl_dsl.model.blocks import ExpertGroup


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_zoo.py"
    spec = importlib.util.spec_from_file_location("bench_zoo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_index_add_lookup_has_the_embedding_gradient():
    bench = _bench()
    torch.manual_seed(0)
    weight = torch.randn(50, 4, requires_grad=True)
    ids = torch.randint(0, 50, (64, 3))  # many repeated ids
    upstream = torch.randn(64, 3, 4)
    (bench.IndexAddLookup.apply(weight, ids) * upstream).sum().backward()
    ours = weight.grad.clone()
    weight.grad = None
    (nn.functional.embedding(ids, weight) * upstream).sum().backward()
    torch.testing.assert_close(ours, weight.grad)  # summation order only
    assert torch.equal(bench.IndexAddLookup.apply(weight, ids), weight[ids])


def test_the_reference_trains_with_fused_adam_and_counts_its_matmul_flops():
    bench = _bench()
    net = bench.Reference("shared_bottom")
    opt = bench.adam(net.parameters())
    b = bench.batches(1)[0]
    before = net.emb.weight.detach().clone()
    bench.ref_loss("shared_bottom", net(b["ids"], b["dense"]), b["click"],
                   b["purchase"]).backward()
    opt.step()
    rows = (b["ids"] + net.offsets).unique()
    moved = (net.emb.weight.detach() != before).any(1)
    assert moved[rows].all() and moved.sum() == len(rows)  # only the batch's rows move
    d = 26 * 16 + 13
    weights = d * 256 + 256 * 128 + 2 * 128 * 64 + 2 * 64
    assert bench.step_flops("shared_bottom") == 6 * bench.BATCH * weights


def test_a_group_of_one_expert_backpropagates_like_its_mlp():
    torch.manual_seed(0)
    group = ExpertGroup(12, 1, [8, 6, 5])
    layers = group.expert_layers(0)
    x = torch.randn(7, 12, requires_grad=True)
    y = ExpertGroup.squeeze(group(x))  # (B, D)
    upstream = torch.randn(7, 5)
    (y * upstream).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in group.parameters()]
    mlp = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(),
                        nn.Linear(6, 5), nn.ReLU())
    with torch.no_grad():
        for linear, (w, b) in zip(mlp[::2], layers):
            linear.weight.copy_(w)
            linear.bias.copy_(b)
    x2 = x.detach().clone().requires_grad_(True)
    ((mlp(x2)) * upstream).sum().backward()
    torch.testing.assert_close(y, mlp(x2))
    torch.testing.assert_close(got[0], x2.grad)
    torch.testing.assert_close(got[1], mlp[0].weight.grad)  # the wide first layer
    deep_w = group.deep[0].weight.grad[0].T  # (out, in), as nn.Linear stores it
    torch.testing.assert_close(deep_w, mlp[2].weight.grad)
    torch.testing.assert_close(group.deep[1].bias.grad.view(-1), mlp[4].bias.grad)
