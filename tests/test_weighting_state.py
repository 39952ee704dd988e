"""The gradient weightings whose state is ours (training/weighting/running.py, pcd.py, nash.py)
against torchjd's, the oracle: fed the same sequence of Jacobians (and the same random
generator, which GradVac draws its orders from), every step's weights or update are torchjd's,
bit for bit. Then their state: plain values that round-trip through `torch.load(weights_only
=True)` and make a restored copy go on exactly as the original.
"""

from __future__ import annotations

import io

import pytest
import torch
import torchjd.aggregation as A

from mtl_dsl.language import registry as reg
from mtl_dsl.training.weighting import aggregators
from mtl_dsl.training.weighting.aggregators import CrossBatch, Running, Smoothed
from mtl_dsl.training.weighting.nash import NashMTL
from mtl_dsl.training.weighting.pcd import PCD
from mtl_dsl.training.weighting.running import SDMGrad, ExcessMTL, GradVac, MoDo

K, N, STEPS = 4, 9, 7


def jacobians(seed: int = 0, steps: int = STEPS) -> list[torch.Tensor]:
    """Random (K, N) Jacobians, one with a zero primary row and one with a conflict."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(K, N, generator=g) for _ in range(steps)]
    out[2][0] = 0.0  # PCD: a zero primary gradient gives a zero update
    out[4][1] = -out[4][0]  # two opposite gradients
    return out


def same_sequence(ours, theirs, inputs) -> None:
    """Call both on each input with the global generator seeded alike; equal bit for bit."""
    for step, x in enumerate(inputs):
        torch.manual_seed(step)
        a = ours(x)
        torch.manual_seed(step)
        b = theirs(x)
        assert a.dtype == b.dtype and torch.equal(a, b), (step, a, b)


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


@pytest.mark.parametrize("beta", [0.5, 0.01])
def test_gradvac_is_torchjds(beta):
    ours, theirs = GradVac(beta=beta), A.GradVacWeighting(beta=beta)
    same_sequence(ours, theirs, [gram(J) for J in jacobians()])


@pytest.mark.parametrize("tau,beta", [(0.02, 0.999), (0.5, 0.9), (1.0, 0.0)])
def test_pcd_is_torchjds(tau, beta):
    ours, theirs = PCD(tau=tau, beta=beta), A.PCDWeighting(tau=tau, beta=beta)
    same_sequence(ours, theirs, [gram(J) for J in jacobians()])


@pytest.mark.parametrize("step,warmup", [(1.0, 0), (0.5, 3)])
def test_excess_mtl_is_torchjds(step, warmup):
    ours, theirs = ExcessMTL(step=step, warmup=warmup), A.ExcessMTLWeighting(step, warmup)
    same_sequence(ours, theirs, jacobians())


def test_modo_is_torchjds():
    mats = [J1 @ J2.T for J1, J2 in zip(jacobians(1), jacobians(2))]
    same_sequence(MoDo(gamma=0.1, rho=0.1), A.MoDoWeighting(gamma=0.1, rho=0.1), mats)


@pytest.mark.parametrize("pref", [None, torch.tensor([0.4, 0.3, 0.2, 0.1])])
def test_sdmgrad_is_torchjds(pref):
    mats = [J1 @ J2.T for J1, J2 in zip(jacobians(3), jacobians(4))]
    same_sequence(SDMGrad(pref=pref), A.SDMGradWeighting(pref_vector=pref), mats)


@pytest.mark.parametrize("every,max_norm", [(1, 1.0), (2, 0.0)])
def test_nashmtl_is_torchjds(every, max_norm):
    pytest.importorskip("cvxpy")  # the solvers extra; the dev install has it
    ours = Running(NashMTL(K, max_norm=max_norm, every=every, iters=20))
    theirs = A.NashMTL(n_tasks=K, max_norm=max_norm, update_weights_every=every, optim_niter=20)
    same_sequence(lambda J: ours(J, torch.ones(K))[0], theirs, jacobians())


def test_crmogm_over_a_stateful_weighting_is_torchjds():
    ours = Smoothed(Running(GradVac(), gramian=True), alpha=0.7)
    theirs = A.GramianWeightedAggregator(A.CRMOGMWeighting(A.GradVacWeighting(), alpha=0.7))
    same_sequence(lambda J: ours(J, torch.ones(K))[0], theirs, jacobians())


# --------------------------------------------------------------------------
# Their state: plain values, and a restored copy goes on as the original
# --------------------------------------------------------------------------

STATEFUL = {"gradvac": {}, "pcd": {}, "nashmtl": {"every": 2}, "excess_mtl": {"warmup": 5},
            "sdmgrad": {}, "modo": {}, "dbmtl": {}, "crmogm": {"of": "gradvac"}}


@pytest.mark.parametrize("kind", list(STATEFUL))
def test_a_restored_aggregator_goes_on_as_the_original_and_a_fresh_one_does_not(kind):
    def make():
        return aggregators.aggregator(kind, reg.WEIGHTINGS[kind](**STATEFUL[kind]),
                                      torch.ones(K))

    Js, L = jacobians(5, 8), torch.ones(K)
    original = make()
    for J in Js[:3]:
        original(J, L)
    buf = io.BytesIO()
    torch.save(original.state_dict(), buf)
    buf.seek(0)
    restored, fresh = make(), make()
    restored.load_state_dict(torch.load(buf, weights_only=True))
    differs = False
    for step, J in enumerate(Js[3:]):
        results = []
        for agg in (original, restored, fresh):
            torch.manual_seed(step)
            results.append(agg(J, L)[1])
        assert torch.equal(results[0], results[1]), step
        differs |= not torch.equal(results[0], results[2])
    assert differs  # the state is what made the difference


def test_a_stateless_aggregator_refuses_a_state_that_is_not_its_own():
    upgrad = aggregators.aggregator("upgrad", reg.WEIGHTINGS["upgrad"](), torch.ones(K))
    assert upgrad.state_dict() == {}
    with pytest.raises(ValueError, match="keeps no state"):
        upgrad.load_state_dict({"phi": torch.zeros(K, K)})


def test_cross_batch_keeps_the_previous_jacobian():
    agg = CrossBatch(MoDo())
    Js = jacobians(6)
    agg(Js[0], torch.ones(K))
    state = agg.state_dict()
    assert torch.equal(state["previous"], Js[0]) and state["weighting"]["lam"].shape == (K,)
