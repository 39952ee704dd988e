"""Parameter models of the networks a spec builds: MLPs (with HoME's feature gate), PEPNet's
gated towers, single linear maps, and the gates over experts (softmax against collapse,
DSelect-k, the task-column interactions of cross-stitch and AdaTT)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .bounds import (MAX_DIM, MAX_EXPERTS, MAX_LAYERS, NonNegativeReal, Params, PositiveReal,
                     Width)

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "none"]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class MLPParams(Params):
    """An MLP: hidden widths in order; each layer is Linear -> norm -> activation -> dropout."""

    widths: tuple[Width, ...] = Field((), max_length=MAX_LAYERS)
    act: Activation = "relu"
    dropout: Dropout = 0.0
    norm: Literal["none", "batch", "layer"] = "none"
    # HoME's feature gate: the net reads x * 2 sigmoid(x A B), A (in, r), B (r, in);
    # feature_gate = r, the LoRA rank (0: no gate); each expert of a group has its own
    feature_gate: int = Field(0, ge=0, le=MAX_DIM)


# ---- PEPNet (Chang et al., KDD 2023): gate neural units on a tower (docs/architectures.md) ----
class PepnetParams(MLPParams):
    """An MLP whose every layer's output is scaled by GateNU_l([by ; sg(x)]) = gamma *
    sigmoid(W2 relu(W1 . + b1) + b2) (PPNet); with no widths, the input x itself is scaled
    (EPNet). `by`: the personalisation prior (a feature or input); towers only (E432)."""

    by: str
    gamma: PositiveReal = 2.0
    feature_gate: Literal[0] = 0  # HoME's feature gate is not combined with PEPNet's gates


class LinearParams(Params):
    """A single linear map (no hidden layer, no activation): the classic single-layer expert."""

    widths: tuple[Width] = Field(min_length=1, max_length=1)



# ---- gates against collapse, DSelect-k, expert diagnostics (docs/architectures.md) ----

class SoftmaxGateParams(Params):
    """A softmax gate: `g(x) = softmax(W x / temperature)` over the listed experts.

    Against collapse: `noise` adds N(0, noise^2) to the logits while training; `top_k` makes it
    Shazeer et al.'s noisy top-k gate (learnt noise softplus(W_noise x) while training, the k
    largest logits kept, softmax over them); `balance` weights the importance loss CV(sum of
    the batch's gate weights)^2 added to the training loss."""

    temperature: PositiveReal = 1.0
    noise: NonNegativeReal = 0.0
    top_k: Annotated[int, Field(ge=1, le=MAX_EXPERTS)] | None = None
    balance: NonNegativeReal = 0.0
    # STEM (Su et al., AAAI 2024): expert groups this gate mixes forward only,
    # their outputs under a stop-gradient ("all forward, task-specific backward"; E433).
    stop: tuple[str, ...] = ()


class DSelectGateParams(Params):
    """DSelect-k (Hazimeh et al. 2021): `k` selectors, each a product of smooth steps of
    ceil(log2 n) logits (the binary code of an expert), mixed by softmax(A x). `gamma` is the
    smooth step's width; `entropy` weights the selectors' entropy regulariser."""

    k: Annotated[int, Field(ge=1, le=MAX_EXPERTS)] = 2
    gamma: PositiveReal = 1.0
    entropy: NonNegativeReal = 0.0
    balance: NonNegativeReal = 0.0



# ---- Per-layer interactions between task columns (cross-stitch, AdaTT, HoME) ----------------
# Gates whose first listed expert group is the reading task's own column (docs/architectures.md).
class StitchGateParams(Params):
    """Cross-stitch (Misra et al. 2016): x_k = sum_j alpha_kj h_j, learnt constants that read no
    input; the task's own experts start at `own` in all, the others share 1 - own."""

    own: Annotated[float, Field(ge=0, le=1)] = 0.9


class FusionGateParams(Params):
    """A fusion gate: softmax(W x / temperature) over every listed expert plus a residual from
    the task's own (first listed) group: `linear` (AdaTT: learnt v^T E_own, or E_own itself when
    the group has one expert), `gated` (HoME's self-gate: sigmoid(U x) E_own for one expert,
    softmax(U x)^T E_own for several) or `none`."""

    temperature: PositiveReal = 1.0
    residual: Literal["linear", "gated", "none"] = "linear"


GATE_PARAMS = (SoftmaxGateParams, DSelectGateParams, StitchGateParams, FusionGateParams)
