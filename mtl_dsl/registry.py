"""The one registry of block kinds: call name -> parameter model (-> module factory).

It is the only list of valid names. The IR builder uses it to read calls, the
validator and the parser's hints use its names for "did you mean", the renderer
uses its roles, and the compiler looks up factories by the same keys. Nothing
here imports torch: the factories live in :mod:`mtl_dsl.blocks`, named by string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator


class Params(BaseModel):
    """Base of every parameter model: frozen, and unknown keywords are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "none"]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class MLPParams(Params):
    """An MLP: hidden widths in order; each layer is Linear -> norm -> activation -> dropout."""

    widths: tuple[PositiveInt, ...] = ()
    act: Activation = "relu"
    dropout: Dropout = 0.0
    norm: Literal["none", "batch", "layer"] = "none"


class LinearParams(Params):
    """A single linear map (no hidden layer, no activation): the classic single-layer expert."""

    widths: tuple[PositiveInt] = Field(min_length=1, max_length=1)


DEFAULT_EMBEDDING_DIM = 16


class SparseParams(Params):
    """A categorical column embedded by a table; `share` reuses another feature's table."""

    vocab: Union[PositiveInt, Literal["auto"]] = "auto"
    dim: PositiveInt | None = None  # None: the shared table's dim, else DEFAULT_EMBEDDING_DIM
    share: str | None = None
    column: str | None = None
    min_count: PositiveInt = 1


class DenseParams(Params):
    """Numeric columns: one column, or `size` columns named NAME_0..NAME_{size-1}."""

    size: PositiveInt = 1
    column: str | None = None
    norm: Literal["none", "standard", "minmax", "log"] = "standard"


class ConcatParams(Params):
    parts: tuple[str, ...] = Field(min_length=1)


class SoftmaxGateParams(Params):
    """A softmax gate: `g(x) = softmax(W x / temperature)` over the listed experts."""

    temperature: Annotated[float, Field(gt=0)] = 1.0


Metric = Literal["auc", "logloss", "mse", "mae", "accuracy"]


class TaskParams(Params):
    """What every task kind takes. `loss=none`: the task has no loss of its own and learns
    only through a product or transfer that uses it (ESMM's CVR). `where=LABEL`: metrics are
    computed on the rows where that label is 1 (CVR AUC on clicked impressions)."""

    label: str
    weight: Annotated[float, Field(ge=0)] = 1.0
    loss: Literal["auto", "none"] = "auto"
    where: str | None = None


class BinaryTask(TaskParams):
    metrics: tuple[Metric, ...] = ("auc", "logloss")


class RegressionTask(TaskParams):
    metrics: tuple[Metric, ...] = ("mse", "mae")


class MulticlassTask(TaskParams):
    classes: Annotated[int, Field(ge=2)]
    metrics: tuple[Metric, ...] = ("accuracy", "logloss")


class AitParams(Params):
    """AITM's adaptive information transfer (Xi et al. 2021) along a chain of tasks.

    `k`: width of h1, h2, h3; `transfer`: the MLP g_(t-1) from z_(t-1) to what may flow
    (its last width must equal the next task's tower width; default one layer of that width);
    `constraint`: the label-constraint weight alpha (0 turns it off)."""

    k: PositiveInt = 32
    transfer: MLPParams | None = None
    constraint: Annotated[float, Field(ge=0)] = 0.6


class CalibrateParams(Params):
    """The label constraint alone: penalise p(later step) > p(earlier step), weight alpha."""

    alpha: Annotated[float, Field(gt=0)] = 0.6


TASK_METRICS: dict[str, frozenset[str]] = {
    "binary": frozenset({"auc", "logloss", "accuracy"}),
    "regression": frozenset({"mse", "mae"}),
    "multiclass": frozenset({"accuracy", "logloss"}),
}


class FixedWeighting(Params):
    """Constant weights: each task's `weight=` (1 by default)."""


class UncertaintyWeighting(Params):
    """Kendall et al.: learn s_i = log sigma_i^2, L = sum 0.5 exp(-s_i) L_i + 0.5 s_i."""

    init: float = 0.0


class GradNormWeighting(Params):
    """Chen et al.: learnable w_i balanced by gradient norms on the last shared layer."""

    alpha: Annotated[float, Field(gt=0)] = 1.5
    lr: Annotated[float, Field(gt=0)] = 0.025


class SyntheticCorrelated(Params):
    """The MMoE paper's generator (ARCHITECTURES.md section 4)."""

    rows: Annotated[int, Field(ge=10)] = 20000
    correlation: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.8
    seed: int = 0
    dim: PositiveInt = 100
    c: Annotated[float, Field(gt=0)] = 1.0
    m: Annotated[int, Field(ge=0)] = 10
    noise: Annotated[float, Field(ge=0)] = 0.01
    target: Literal["regression", "binary", "multiclass"] = "regression"
    classes: Annotated[int, Field(ge=2)] = 4


class CsvSource(Params):
    path: str
    sep: str = ","
    header: bool = True
    columns: tuple[str, ...] | None = None
    na: tuple[str, ...] = ("", "NA", "NaN", "nan", "?")


class ParquetSource(Params):
    path: str


class PleParams(Params):
    """A PLE template: `levels` CGC levels expanded into ordinary experts and gates."""

    levels: Annotated[int, Field(ge=1)] = 2
    specific: PositiveInt = 1
    shared: PositiveInt = 1
    tasks: tuple[str, ...] = Field(min_length=2)
    expert: MLPParams
    gate: SoftmaxGateParams = SoftmaxGateParams()

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("each task may appear only once")
        return v


class CgcParams(PleParams):
    """CGC is a single PLE level."""

    levels: Literal[1] = 1


class TrainParams(Params):
    epochs: PositiveInt = 5
    batch: PositiveInt = 256
    lr: Annotated[float, Field(gt=0)] = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    seed: int = 0
    val: Annotated[float, Field(gt=0, lt=1)] = 0.2
    monitor: str | None = None
    patience: Annotated[int, Field(ge=1)] | None = None
    threads: PositiveInt | None = None


@dataclass(frozen=True)
class BlockKind:
    """One entry: how a call's positional arguments map onto its parameter model."""

    name: str
    role: str
    params: type[Params]
    positional: tuple[str, ...] = ()  # a leading '*' collects the rest into a tuple
    factory: str | None = None  # "module:attr" in mtl_dsl.blocks, resolved by the compiler
    doc: str = ""


def _kinds(*kinds: BlockKind) -> dict[str, BlockKind]:
    return {k.name: k for k in kinds}


# role -> call name -> kind. The statement keyword decides the role.
REGISTRY: dict[str, dict[str, BlockKind]] = {
    "feature": _kinds(
        BlockKind("sparse", "feature", SparseParams, doc="categorical column -> embedding"),
        BlockKind("dense", "feature", DenseParams, ("size",), doc="numeric column(s), normalised"),
    ),
    "input": _kinds(BlockKind("concat", "input", ConcatParams, ("*parts",),
                              doc="features side by side")),
    "net": _kinds(
        BlockKind("mlp", "net", MLPParams, ("input", "*widths"), "mtl_dsl.blocks:MLP",
                  "Linear -> norm -> act -> dropout per width"),
        BlockKind("linear", "net", LinearParams, ("input", "*widths"), "mtl_dsl.blocks:MLP",
                  "one Linear layer, no activation"),
    ),
    "gate": _kinds(BlockKind("softmax", "gate", SoftmaxGateParams, ("input",),
                             "mtl_dsl.blocks:SoftmaxGate", "softmax(W x) over experts")),
    "task": _kinds(
        BlockKind("binary", "task", BinaryTask, doc="sigmoid output, BCE loss"),
        BlockKind("regression", "task", RegressionTask, doc="linear output, MSE loss"),
        BlockKind("multiclass", "task", MulticlassTask, doc="softmax output, cross-entropy"),
    ),
    "weighting": _kinds(
        BlockKind("fixed", "weighting", FixedWeighting, doc="constant task weights"),
        BlockKind("uncertainty", "weighting", UncertaintyWeighting, doc="UWL, Kendall et al."),
        BlockKind("gradnorm", "weighting", GradNormWeighting, doc="GradNorm, Chen et al."),
    ),
    "data": _kinds(
        BlockKind("synthetic.correlated", "data", SyntheticCorrelated,
                  doc="MMoE paper's two-task generator"),
        BlockKind("csv", "data", CsvSource, ("path",), doc="CSV file (optionally .gz)"),
        BlockKind("parquet", "data", ParquetSource, ("path",), doc="Parquet file or folder"),
    ),
    "transfer": _kinds(
        BlockKind("ait", "transfer", AitParams, doc="AITM attention transfer + label constraint"),
        BlockKind("calibrate", "transfer", CalibrateParams, doc="label constraint only"),
    ),
    "extract": _kinds(
        BlockKind("ple", "extract", PleParams, ("input",), doc="PLE: stacked CGC levels"),
        BlockKind("cgc", "extract", CgcParams, ("input",), doc="CGC: one PLE level"),
    ),
    "train": _kinds(BlockKind("train", "train", TrainParams)),
}

# Statement keyword -> the registry role its call is looked up in.
ROLE_OF_KEYWORD = {"feature": "feature", "input": "input", "experts": "net", "tower": "net",
                   "gate": "gate", "task": "task", "weighting": "weighting", "data": "data",
                   "extract": "extract", "transfer": "transfer"}


def kinds(role: str) -> dict[str, BlockKind]:
    return REGISTRY[role]
