"""The parameter model of the `train` statement: epochs, batches, the optimizer and its
schedule, MAML, checkpoints and precision."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .bounds import (MAX_BATCH, MAX_EXPERTS, MAX_FACTOR, MAX_STEPS, NonNegativeReal, Params,
                     PositiveReal, Seed, Steps)

class TrainParams(Params):
    """`meta=maml` trains MAML-style across tasks (MetaHeac): each task's batch is split into
    a support part (`support` of it) and a query part; `inner_steps` SGD steps of `inner_lr`
    on the support loss adapt a copy of the parameters, and the query losses of the adapted
    copies update the originals (first-order unless `first_order=false`)."""

    epochs: Steps = 5
    batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 256
    lr: PositiveReal = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: NonNegativeReal = 0.0
    seed: Seed = 0
    val: Annotated[float, Field(gt=0, lt=1)] = 0.2
    monitor: str | None = None
    patience: Steps | None = None
    threads: Annotated[int, Field(ge=1, le=MAX_EXPERTS)] | None = None
    meta: Literal["none", "maml"] = "none"
    inner_lr: PositiveReal = 0.01
    inner_steps: Annotated[int, Field(ge=1, le=1000)] = 1
    support: Annotated[float, Field(gt=0, lt=1)] = 0.5
    first_order: bool = True
    checkpoint_every: Annotated[int, Field(ge=1)] | None = None  # steps between resume.pt saves
    # bf16 autocast of the forward pass and losses (training/precision.py, docs/scaling.md)
    precision: Literal["fp32", "bf16"] = "fp32"
    # Optimizer and schedule (training/optim.py, training/schedules.py; docs/language.md
    # "Optimizer, schedule and clipping"): the learning rate per step, clipping, decay groups.
    schedule: Literal["constant", "linear", "cosine", "step", "plateau"] = "constant"
    warmup: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 0  # steps of linear warm-up
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 0  # or whole epochs of it
    min_lr: Annotated[float, Field(ge=0, le=MAX_FACTOR)] = 0.0  # the floor of every schedule
    step_size: Steps | None = None  # schedule=step: epochs between two decays
    gamma: Annotated[float, Field(gt=0, lt=1)] = 0.1  # schedule=step: the decay factor
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1  # schedule=plateau: the decay factor
    lr_patience: Steps = 2  # schedule=plateau: epochs without improvement before a decay
    clip: PositiveReal | None = None  # max global gradient norm (after a method's aggregation)
    embedding_l2: NonNegativeReal = 0.0  # decay of the embedding tables (weight_decay skips them)
    # which engine holds the embedding tables (docs/scaling.md): TorchRec where it is installed
    # and the spec fits it (auto), the native tables (native), or TorchRec only (torchrec)
    engine: Literal["auto", "native", "torchrec"] = "auto"
