"""The parameter model of the `train` statement: epochs, batches, the optimizer and its
schedule, MAML, checkpoints and precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from .bounds import (MAX_BATCH, MAX_EXPERTS, MAX_FACTOR, MAX_STEPS, NonNegativeReal, Params,
                     PositiveReal, Seed, Steps)

DenseOptimizer = Literal["adam", "adamw", "sgd"]
EmbeddingOptimizer = Literal["lazy_adam", "rowwise_adagrad", "adagrad", "sgd", "dense"]
# float32 state tensors per weight of the dense optimizers (SGD: its momentum); with `dense`
# embedding updates a table also holds a full-size gradient
DENSE_OPTIMIZER_SLOTS: dict[str, int] = {"adam": 2, "adamw": 2, "sgd": 1}
MAX_MEMORY_GB = 1e6  # `train memory=`: a process's budget, in GB
# rows of tables whose full gradient a step takes (MAML, a gradient method over the tables)
# above which `mtl check` warns (W008): the step then costs the tables' size
DENSE_GRADIENT_ROWS = 1_000_000


@dataclass(frozen=True)
class RowOptimizer:
    """An embedding optimizer that updates the rows a batch touches (docs/language.md,
    "Embedding tables"): its float32 state per weight and per row (the memory estimate,
    language/memory.py, reads these) and its epsilon."""

    per_weight: int  # state floats per weight: Adam's two moments, Adagrad's sum
    per_row: int  # state floats per row: row-wise Adagrad's one sum
    eps: float
    about: str


ROW_OPTIMIZERS: dict[str, RowOptimizer] = {
    "lazy_adam": RowOptimizer(2, 0, 1e-8, "Adam's moments, advanced on the touched rows only"),
    "rowwise_adagrad": RowOptimizer(0, 1, 1e-8, "one Adagrad sum per row (FBGEMM's)"),
    "adagrad": RowOptimizer(1, 0, 1e-10, "Adagrad's sum per weight (torch's, on the rows)"),
    "sgd": RowOptimizer(0, 0, 0.0, "plain SGD on the touched rows"),
}

class TrainParams(Params):
    """`meta=maml` trains MAML-style across tasks (MetaHeac): each task's batch is split into
    a support part (`support` of it) and a query part; `inner_steps` SGD steps of `inner_lr`
    on the support loss adapt a copy of the parameters, and the query losses of the adapted
    copies update the originals (first-order unless `first_order=false`)."""

    epochs: Steps = 5
    batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 256
    lr: PositiveReal = 1e-3
    optimizer: DenseOptimizer = "adam"
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
    # The tables' own optimizer and rate (docs/language.md, "Embedding tables"): rows updated
    # where a batch touches them; `dense` is every row by `optimizer=`, every step
    embedding_optimizer: EmbeddingOptimizer = "lazy_adam"
    embedding_lr: PositiveReal | None = None  # None: lr (schedules scale both alike)
    # one process's memory budget in GB (None: the machine's memory over its processes);
    # tables over it are sharded by rows across processes (docs/scaling.md)
    memory: Annotated[float, Field(gt=0, le=MAX_MEMORY_GB)] | None = None
    # which engine holds the embedding tables (docs/scaling.md): TorchRec on a GPU where it is
    # installed and the spec fits it, else native (auto); native; or TorchRec only (torchrec)
    engine: Literal["auto", "native", "torchrec"] = "auto"
