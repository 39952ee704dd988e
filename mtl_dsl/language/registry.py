"""The one registry of block kinds: call name -> parameter model (-> module factory).

It is the only list of valid names. The IR builder uses it to read calls, the
validator and the parser's hints use its names for "did you mean", the renderer
uses its roles, and the compiler and the trainer find their implementations through
`BlockKind.implementation()` (blocks in :mod:`mtl_dsl.model.blocks`, weighting methods in
:mod:`mtl_dsl.training`), named by string and imported on first use: nothing here imports
torch.
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .syntax import Call, plain


# Bounds of every size a spec can set (docs/language.md, "Bounds"): generous for real models,
# small enough that whatever `mtl check` accepts compiles and that the parameter estimate
# (language/size.py) and its cap (MAX_PARAMS, `mtl check --max-params`) see every tensor.
MAX_WIDTH = 65_536  # a layer's width; also AIT's k
MAX_LAYERS = 64  # widths in one mlp(...)
MAX_DIM = 4_096  # an embedding's dim, a task embedding's
MAX_TABLE = 1_000_000_000  # rows of an embedding table (vocab=N, hash=N)
MAX_EXPERTS = 1_024  # experts in one group, critics, a template's experts per branch
MAX_COLUMNS = 100_000  # columns of one dense feature
MAX_CLASSES = 100_000
MAX_SEQUENCE = 10_000  # ids kept per row of a sequence feature
MAX_LEVELS = 32  # PLE levels
MAX_ROWS = 100_000_000  # rows a synthetic source generates
MAX_VALUES = 500_000_000  # rows x columns a synthetic source generates (2 GB of float32)
MAX_STEPS = 1_000_000  # epochs, patience, warm-up epochs, solver iterations
MAX_BATCH = 1_048_576
MAX_SEED = 2 ** 32 - 1  # numpy's seeds are 32-bit
MAX_FACTOR = 1e6  # any positive real (a weight, a temperature, a learning rate)
MAX_PARAMS = 2_000_000_000  # parameters `mtl check` accepts by default (E419)

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Count = Annotated[int, Field(ge=1, le=MAX_EXPERTS)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
PositiveReal = Annotated[float, Field(gt=0, le=MAX_FACTOR)]
NonNegativeReal = Annotated[float, Field(ge=0, le=MAX_FACTOR)]


class Params(BaseModel):
    """Base of every parameter model: frozen, and unknown keywords are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "none"]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class MLPParams(Params):
    """An MLP: hidden widths in order; each layer is Linear -> norm -> activation -> dropout."""

    widths: tuple[Width, ...] = Field((), max_length=MAX_LAYERS)
    act: Activation = "relu"
    dropout: Dropout = 0.0
    norm: Literal["none", "batch", "layer"] = "none"
    # HoME's feature gate (issue 15): the net reads x * 2 sigmoid(x A B), A (in, r), B (r, in);
    # feature_gate = r, the LoRA rank (0: no gate); each expert of a group has its own
    feature_gate: int = Field(0, ge=0, le=MAX_DIM)


# ---- PEPNet (Chang et al., KDD 2023): gate neural units on a tower (issue 15) ----
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


DEFAULT_EMBEDDING_DIM = 16


class SparseParams(Params):
    """A categorical column embedded by a table; `share` reuses another feature's table.

    `vocab=auto`: ids by frequency on the training split (values seen fewer than
    `min_count` times, unseen and missing values share id 0); `vocab=N`: the column holds
    ids 0..N-1; `hash=N`: values hashed into N buckets (id 0 for missing values)."""

    vocab: Union[Annotated[int, Field(ge=1, le=MAX_TABLE)], Literal["auto"]] = "auto"
    dim: Annotated[int, Field(ge=1, le=MAX_DIM)] | None = None  # None: the shared table's
    share: str | None = None  # dim, else DEFAULT_EMBEDDING_DIM
    column: str | None = None
    min_count: Annotated[int, Field(ge=1, le=MAX_TABLE)] = 1
    hash: Annotated[int, Field(ge=1, le=MAX_TABLE - 1)] | None = None

    @field_validator("hash")
    @classmethod
    def _hash_or_vocab(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("vocab", "auto") != "auto":
            raise ValueError("hash= replaces vocab=; give one of them")
        return v


    def table_rows(self) -> int | None:
        """Rows of the table this feature owns, when the spec alone fixes them: `hash=N` has
        N buckets plus row 0 for missing values, `vocab=N` has N rows; `vocab=auto` is sized by
        the data (None). The one statement of this rule: the data's encoders, the compiler and
        the diagram all read it."""
        if self.hash is not None:
            return self.hash + 1
        return None if self.vocab == "auto" else self.vocab


# ---- DUPN (Ni et al., KDD 2018): sequence encoders and attention pooling (issue 15) ----
class AttentionPoolParams(Params):
    """Attention pooling of a sequence's states h_t: a_t = softmax_t(v . tanh(W h_t + U q + b))
    over the row's ids, q the embedding of the sparse feature `query` (the item or context
    the sequence is read for; none: a learnt vector). `width`: the attention's hidden width."""

    query: str | None = None
    width: Width = 32


class SequenceParams(SparseParams):
    """A list of ids per row (a behaviour history), embedded and pooled to one vector.

    Text cells are split on `sep`; Parquet list cells are read as they are. At most
    `max_len` ids per row are kept (the last ones). `encoder=gru|lstm` runs a recurrent
    layer (hidden width `dim`) over the embedded ids before pooling, `encoder=transformer` one
    causal single-head Transformer layer with learnt positions; `pool=attention(...)` weighs
    the states by attention (DUPN), `pool=last` keeps the last real id's state."""

    pool: Union[Literal["mean", "sum", "last"], AttentionPoolParams] = "mean"
    encoder: Literal["none", "gru", "lstm", "transformer"] = "none"
    sep: str = "|"
    max_len: Annotated[int, Field(ge=1, le=MAX_SEQUENCE)] = 50


class DenseParams(Params):
    """Numeric columns: one column, or `size` columns named NAME_0..NAME_{size-1}
    (NAME_1..NAME_size with `start=1`; NAME is `column` when given)."""

    size: Annotated[int, Field(ge=1, le=MAX_COLUMNS)] = 1
    column: str | None = None
    start: Annotated[int, Field(ge=0, le=MAX_TABLE)] = 0
    norm: Literal["none", "standard", "minmax", "log"] = "standard"
    missing: Literal["error", "mean", "zero"] = "error"  # mean: of the training split


class ConcatParams(Params):
    parts: tuple[str, ...] = Field(min_length=1)


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
    # STEM (Su et al., AAAI 2024; issue 15): expert groups this gate mixes forward only,
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


# Expert diagnostics (training/experts.py): an expert is negligible for a gate when its mean
# weight is below NEGLIGIBLE_SHARE / n; a gate collapses when one expert takes more than
# COLLAPSE_WEIGHT of the weight in more than COLLAPSE_ROWS of the rows; two experts are
# near-identical when their outputs' cosine (centred over the sample) exceeds IDENTICAL_COSINE.
# The statistics are computed on at most EXPERT_SAMPLE_ROWS validation rows per epoch.
NEGLIGIBLE_SHARE = 0.1
COLLAPSE_WEIGHT = 0.9
COLLAPSE_ROWS = 0.9
IDENTICAL_COSINE = 0.99
EXPERT_SAMPLE_ROWS = 2048


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
# ---- end of the task-column interactions ------------------------------------------------------


# A metric name; which ones a task kind reports is METRICS' fact (validate.check_tasks lists
# them in its diagnostic), not a type, so that a wrong one is not a pydantic error here.
Metric = Annotated[str, Field(min_length=1, max_length=64)]


class TaskParams(Params):
    """What every task kind takes. `loss=none`: the task has no loss of its own and learns
    only through a product or transfer that uses it (ESMM's CVR). `where=LABEL`: metrics are
    computed on the rows where that label is 1 (CVR AUC on clicked impressions)."""

    label: str
    weight: NonNegativeReal = 1.0
    loss: Literal["auto", "none"] = "auto"
    where: str | None = None
    group: str | None = None  # the column grouping rows for gauc, ndcg@k, recall@k (a user)


class BinaryTask(TaskParams):
    metrics: tuple[Metric, ...] = ("auc", "logloss")


class RegressionTask(TaskParams):
    metrics: tuple[Metric, ...] = ("mse", "mae")


class MulticlassTask(TaskParams):
    classes: Annotated[int, Field(ge=2, le=MAX_CLASSES)]
    metrics: tuple[Metric, ...] = ("accuracy", "logloss")


class AitParams(Params):
    """AITM's adaptive information transfer (Xi et al. 2021) along a chain of tasks.

    `k`: width of h1, h2, h3; `transfer`: the MLP g_(t-1) from z_(t-1) to what may flow
    (its last width must equal the next task's tower width; default one layer of that width);
    `constraint`: the label-constraint weight alpha (0 turns it off)."""

    k: Width = 32
    transfer: MLPParams | None = None
    constraint: NonNegativeReal = 0.6


class CalibrateParams(Params):
    """The label constraint alone: penalise p(later step) > p(earlier step), weight alpha."""

    alpha: PositiveReal = 0.6


# ---- ESCM² (Wang et al., SIGIR 2022): the counterfactual CVR regulariser (issue 15) ----
class CounterfactualParams(Params):
    """ESCM²'s counterfactual risk on a CTR -> CVR pair, added to the loss with weight `weight`
    (lambda): the CVR loss on clicked rows weighted by 1/pCTR over every impression
    (`mode=ips`), or doubly robust (`mode=dr`) with an imputation tower `imputation` that
    estimates the CVR error on every impression. `clip`: the least propensity, so 1/pCTR is
    at most 1/clip (docs/architectures.md, "ESCM²")."""

    mode: Literal["ips", "dr"] = "ips"
    weight: PositiveReal = 0.1
    clip: Annotated[float, Field(gt=0, le=1)] = 0.05
    imputation: MLPParams | None = None  # mode=dr: default mlp(64)

    @model_validator(mode="after")
    def _imputation_is_dr(self) -> "CounterfactualParams":
        if self.imputation is not None and self.mode != "dr":
            raise ValueError("imputation= is the doubly robust imputation tower; it needs "
                             "mode=dr")
        return self

    def imputation_net(self) -> MLPParams:
        """The imputation tower's hidden layers (mode=dr)."""
        return self.imputation or MLPParams(widths=(64,))


@dataclass(frozen=True)
class MetricFact:
    """A metric's direction (model selection, early stopping, `mtl compare`'s gains) and the
    task kinds it is defined for (`mtl check` refuses it elsewhere)."""

    name: str
    higher_is_better: bool
    task_kinds: frozenset[str]
    doc: str = ""
    selectable: bool = True  # may be train monitor= (a ratio whose ideal is 1 may not)
    grouped: bool = False  # computed within the groups of the task's group= column


def _metrics(*facts: MetricFact) -> dict[str, MetricFact]:
    return {m.name: m for m in facts}


_ANY_TASK = frozenset({"binary", "regression", "multiclass"})
METRICS: dict[str, MetricFact] = _metrics(
    MetricFact("auc", True, frozenset({"binary"}), "area under the ROC curve"),
    MetricFact("logloss", False, frozenset({"binary", "multiclass"}), "mean cross-entropy"),
    MetricFact("accuracy", True, frozenset({"binary", "multiclass"}), "share of exact answers"),
    MetricFact("mse", False, frozenset({"regression"}), "mean squared error"),
    MetricFact("mae", False, frozenset({"regression"}), "mean absolute error"),
    # The training objective of a task (not written in specs; monitored without a metric).
    MetricFact("loss", False, _ANY_TASK, "the task's own training loss"),
    # --- ranking and calibration metrics (data frictions, issue 11; training/ranking_metrics.py)
    MetricFact("rmse", False, frozenset({"regression"}), "root of the mean squared error"),
    MetricFact("pr_auc", True, frozenset({"binary"}),
               "average precision: area under the precision-recall curve"),
    MetricFact("calibration", False, frozenset({"binary"}),
               "mean predicted probability over mean label (1 is calibrated; not for monitor=)",
               selectable=False),
    MetricFact("gauc", True, frozenset({"binary"}),
               "AUC within each group= value, averaged weighted by group size", grouped=True),
    MetricFact("ndcg@k", True, frozenset({"binary", "regression"}),
               "NDCG of the top k rows of each group= value (gain: the label)", grouped=True),
    MetricFact("recall@k", True, frozenset({"binary"}),
               "share of a group's positives among its top k rows", grouped=True),
)
MAX_TOP_K = 10_000  # the largest k of ndcg@k and recall@k


def metric_family(name: str) -> str:
    """The METRICS entry a metric name belongs to: `ndcg@10` -> `ndcg@k` (k in 1..MAX_TOP_K);
    any other name is its own (unknown names stay unknown)."""
    base, at, k = name.partition("@")
    if at and k.isdigit() and 1 <= int(k) <= MAX_TOP_K and f"{base}@k" in METRICS:
        return f"{base}@k"
    return name


def top_k(name: str) -> int:
    """The k of `ndcg@10` (a name metric_family maps to an `@k` family)."""
    return int(name.partition("@")[2])

# Task kind -> the metrics a spec may ask of it (derived from METRICS; `loss` is implicit).
TASK_METRICS: dict[str, frozenset[str]] = {
    kind: frozenset(m.name for m in METRICS.values() if kind in m.task_kinds and m.name != "loss")
    for kind in sorted(_ANY_TASK)
}


# Plots (the console/plots feature, training/plots.py): the metrics whose values lie in
# [0, 1] share one panel; every other metric (an error: mse, mae, logloss) gets its own scale.
UNIT_INTERVAL_METRICS: frozenset[str] = frozenset({"auc", "accuracy"})


def higher_is_better(metric: str) -> bool:
    return METRICS[metric_family(metric)].higher_is_better


class WeightingParams(Params):
    """Base of every weighting method's parameters. The class variables are facts about the
    method, not parameters: its `family` (loss: weights from loss values; gradient: combines
    the per-task gradients of the shared part), whether it `multiplies` the tasks' `weight=`
    (else `mtl check` warns that they are ignored), the optional modules it `needs` and the
    fewest tasks it balances."""

    family: ClassVar[Literal["loss", "gradient"]] = "loss"
    multiplies: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()
    min_tasks: ClassVar[int] = 2

    def honours_weights(self) -> bool:
        return self.multiplies

    def required_modules(self) -> tuple[str, ...]:
        return self.needs

    def missing_modules(self) -> list[str]:
        """The optional modules this method needs that are not installed (looked up, not
        imported, so the front end stays torch-free)."""
        import importlib.util

        return [m for m in self.required_modules() if importlib.util.find_spec(m) is None]

    def fewest_tasks(self) -> int:
        """The fewest tasks with a loss it balances (`mtl check` refuses fewer)."""
        return self.min_tasks


Unit = Annotated[float, Field(ge=0, le=1)]
Positive = PositiveReal
NonNegative = NonNegativeReal
QP = ("qpsolvers", "quadprog")  # torchjd's dual-cone projector
SOLVER_EXTRA = "mtl-dsl[solvers]"


class FixedWeighting(WeightingParams):
    """Constant weights: each task's `weight=` (1 by default)."""

    multiplies: ClassVar[bool] = True
    min_tasks: ClassVar[int] = 1


class UncertaintyWeighting(WeightingParams):
    """Kendall et al.: learn s_i = log sigma_i^2, L = sum 0.5 exp(-s_i) L_i + 0.5 s_i."""

    init: Annotated[float, Field(ge=-MAX_FACTOR, le=MAX_FACTOR)] = 0.0


class GradNormWeighting(WeightingParams):
    """Chen et al.: learnable w_i balanced by gradient norms on the last shared layer."""

    alpha: PositiveReal = 1.5
    lr: PositiveReal = 0.025


class DwaWeighting(WeightingParams):
    """Liu et al. 2019: w_i = K softmax(r_i / t), r_i = L_i(e-1) / L_i(e-2) (epoch means)."""

    multiplies: ClassVar[bool] = True
    t: Positive = 2.0


class RlwWeighting(WeightingParams):
    """Lin et al. 2022: fresh random weights each step, summing to 1 (softmax of N(0, 1),
    a flat Dirichlet draw, or U(0, 1) draws divided by their sum)."""

    multiplies: ClassVar[bool] = True
    dist: Literal["normal", "dirichlet", "uniform"] = "normal"


class GlsWeighting(WeightingParams):
    """Chennupati et al. 2019: the geometric mean of the losses, (prod_i L_i)^(1/K)."""

    multiplies: ClassVar[bool] = True  # as exponents: exp(sum_i w_i log L_i / sum_i w_i)


class ImtlLWeighting(WeightingParams):
    """IMTL-L (Liu et al. 2021): learnt scales, L = sum_i exp(s_i) L_i - s_i."""

    init: Annotated[float, Field(ge=-MAX_FACTOR, le=MAX_FACTOR)] = 0.0


class FamoWeighting(WeightingParams):
    """Liu et al. 2023: z = softmax(xi), loss sum_i z_i log L_i / c; xi follows the log-loss
    decrease each step (Adam, learning rate `lr`, weight decay `decay`)."""

    lr: Positive = 0.025
    decay: NonNegative = 1e-3


class StchWeighting(WeightingParams):
    """Lin et al. 2024, smooth Tchebycheff: mu log sum_i exp(w_i log(L_i / n_i) / mu) after
    `warmup` epochs of sum_i w_i log L_i; n is the mean loss of the last warmup epoch."""

    multiplies: ClassVar[bool] = True  # as preferences
    mu: Positive = 1.0
    warmup: Steps = 1


class GradientWeighting(WeightingParams):
    """Gradient methods: `on=parameters` takes each task's gradient on the shared parameters
    (`embeddings=true` adds the shared embedding tables); `on=representation` on the outputs of
    the shared blocks that task-specific blocks read (LibMTL's rep_grad)."""

    family: ClassVar[Literal["loss", "gradient"]] = "gradient"
    needs: ClassVar[tuple[str, ...]] = ("torchjd",)
    # How the method reads the tasks' weight=: "none" (scaling the gradients, when it
    # multiplies them), or as its preference vector, divided by K ("mean") or as given ("sum").
    preference: ClassVar[Literal["none", "mean", "sum"]] = "none"
    on: Literal["parameters", "representation"] = "parameters"
    embeddings: bool = False

    def preference_mode(self) -> Literal["none", "mean", "sum"]:
        """How weight= reach the aggregator, when the method honours them."""
        return self.preference if self.honours_weights() else "none"


class UpgradWeighting(GradientWeighting):
    """Quinton & Rey 2024: each gradient projected onto the dual cone of all, averaged."""

    multiplies: ClassVar[bool] = True
    preference: ClassVar[Literal["none", "mean", "sum"]] = "mean"
    needs: ClassVar[tuple[str, ...]] = ("torchjd", *QP)


class DualprojWeighting(GradientWeighting):
    """The mean gradient projected onto the dual cone of the task gradients (GEM)."""

    multiplies: ClassVar[bool] = True
    preference: ClassVar[Literal["none", "mean", "sum"]] = "mean"
    needs: ClassVar[tuple[str, ...]] = ("torchjd", *QP)


class MgdaWeighting(GradientWeighting):
    """Sener & Koltun 2018: the min-norm point of the convex hull of the gradients (Frank-Wolfe);
    `norm` rescales the gradients first (none, l2, loss, loss+ as in MGDA-UB's code)."""

    epsilon: Positive = 1e-3
    iters: Steps = 100
    norm: Literal["none", "l2", "loss", "loss+"] = "none"


class PcgradWeighting(GradientWeighting):
    """Yu et al. 2020: project each gradient off the others it conflicts with, then sum."""

    multiplies: ClassVar[bool] = True


class GradvacWeighting(GradientWeighting):
    """Wang et al. 2021: steer pairwise cosines toward their running mean (EMA `beta`)."""

    multiplies: ClassVar[bool] = True
    beta: Unit = 0.5


class CagradWeighting(GradientWeighting):
    """Liu et al. 2021: the best worst-case direction within a ball of radius c around the mean."""

    multiplies: ClassVar[bool] = True
    needs: ClassVar[tuple[str, ...]] = ("torchjd", "cvxpy", "clarabel")
    c: NonNegative = 0.5


class ImtlGWeighting(GradientWeighting):
    """IMTL-G (Liu et al. 2021): equal projections of the update onto every task gradient."""


class NashMtlWeighting(GradientWeighting):
    """Navon et al. 2022: the Nash bargaining solution of the tasks."""

    needs: ClassVar[tuple[str, ...]] = ("torchjd", "cvxpy", "ecos")
    max_norm: NonNegative = 1.0
    every: Steps = 1
    iters: Steps = 20


class AlignedMtlWeighting(GradientWeighting):
    """Senushkin et al. 2023: align the gradients' principal components (scale by the `scale`
    singular value)."""

    multiplies: ClassVar[bool] = True
    preference: ClassVar[Literal["none", "mean", "sum"]] = "mean"
    scale: Literal["min", "median", "rmse"] = "min"


class GraddropWeighting(GradientWeighting):
    """Chen et al. 2020: keep each coordinate's positive or negative parts by sign purity."""

    multiplies: ClassVar[bool] = True
    leak: Unit = 0.0


class ConfigWeighting(GradientWeighting):
    """Liu et al. 2024 (ConFIG): the direction with equal cosine to every unit gradient."""

    multiplies: ClassVar[bool] = True
    preference: ClassVar[Literal["none", "mean", "sum"]] = "sum"


class FairgradWeighting(GradientWeighting):
    """Ban & Ji 2024: alpha-fair utility of the tasks' loss decreases."""

    needs: ClassVar[tuple[str, ...]] = ("torchjd", "scipy")
    alpha: Positive = 1.0


class RgwWeighting(GradientWeighting):
    """Random gradient weighting (Lin et al. 2022): random positive weights on the gradients."""

    multiplies: ClassVar[bool] = True


class ExcessMtlWeighting(GradientWeighting):
    """He et al. 2024: weights by each task's estimated excess risk (exponentiated gradient)."""

    step: Positive = 1.0
    warmup: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 0


class PcdWeighting(GradientWeighting):
    """Priority-constrained descent: earlier tasks first, later ones within a tolerance tau."""

    tau: Positive = 0.02
    beta: Annotated[float, Field(ge=0, lt=1)] = 0.999


class SdmgradWeighting(GradientWeighting):
    """Xiao et al. 2023: direction-oriented MGDA pulled toward the mean by `lam`."""

    multiplies: ClassVar[bool] = True
    preference: ClassVar[Literal["none", "mean", "sum"]] = "mean"
    lr: Positive = 10.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.5
    iters: Steps = 20
    lam: NonNegative = 0.3


class ModoWeighting(GradientWeighting):
    """Chen et al. 2024 (MoDo): stochastic MGDA weights, one projected step per batch."""

    gamma: Positive = 0.1
    rho: NonNegative = 0.1


class KrumWeighting(GradientWeighting):
    """Blanchard et al. 2017 (Byzantine-robust): the gradient(s) closest to the others."""

    byzantine: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 0
    selected: Count = 1
    min_tasks: ClassVar[int] = 3

    def fewest_tasks(self) -> int:
        """Krum tolerates `byzantine` faulty gradients among at least byzantine + 3."""
        return max(self.min_tasks, self.byzantine + 3)


class TrimmedMeanWeighting(GradientWeighting):
    """Yin et al. 2018 (Byzantine-robust): per coordinate, drop the `trim` largest and smallest."""

    trim: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 0

    def fewest_tasks(self) -> int:
        """Trimming `trim` from each end leaves at least one value per coordinate."""
        return max(self.min_tasks, 2 * self.trim + 1)


SMOOTHABLE = Literal["mgda", "upgrad", "dualproj", "pcgrad", "gradvac", "cagrad", "imtl_g",
                     "aligned_mtl", "fairgrad", "pcd", "nashmtl", "rgw", "excess_mtl"]


class CrmogmWeighting(GradientWeighting):
    """Zhou et al. 2022 (CR-MOGM): another method's weights smoothed, w = a w_prev + (1-a) w."""

    of: SMOOTHABLE = "mgda"
    alpha: Unit = 0.9

    def honours_weights(self) -> bool:
        return WEIGHTINGS[self.of].multiplies

    def required_modules(self) -> tuple[str, ...]:
        return WEIGHTINGS[self.of].needs

    def preference_mode(self) -> Literal["none", "mean", "sum"]:
        return WEIGHTINGS[self.of].preference if self.honours_weights() else "none"


class DbmtlWeighting(GradientWeighting):
    """Lin et al. 2023 (DB-MTL): gradients of log L_i, averaged over steps (EMA beta/t^sigma),
    each scaled to the largest one's norm, summed."""

    needs: ClassVar[tuple[str, ...]] = ()
    beta: Annotated[float, Field(ge=0, lt=1)] = 0.9
    sigma: NonNegative = 0.0


_LOSSES = "mtl_dsl.training.losses"  # where the weighting entries' implementations live
_AGG = "mtl_dsl.training.aggregators"


@dataclass(frozen=True)
class Values:
    """What a generated column holds: `real` (finite floats of either sign), `binary` (0/1),
    `ids` (integers >= 0), `classes` (integers 0..classes-1) or `text`. `mtl check` compares
    it with what reads the column instead of drawing the data (mtl_dsl/data/sample.py)."""

    kind: Literal["real", "binary", "ids", "classes", "text"]
    classes: int = 0


REAL, BINARY, IDS, TEXT = Values("real"), Values("binary"), Values("ids"), Values("text")


class SyntheticSource(Params):
    """A built-in generator (mtl_dsl/data/synthetic.py): data from its parameters alone."""

    @abstractmethod
    def columns(self) -> dict[str, Values]:
        """The generator's columns in order, each with what it holds: the one declaration
        of its output, which tests/test_synthetic_columns.py holds the generator to."""


class SyntheticCorrelated(SyntheticSource):
    """The MMoE paper's generator (docs/architectures.md)."""

    rows: Annotated[int, Field(ge=10, le=MAX_ROWS)] = 20000
    correlation: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.8
    seed: Seed = 0
    dim: Annotated[int, Field(ge=1, le=MAX_COLUMNS)] = 100
    c: PositiveReal = 1.0
    m: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 10
    noise: NonNegativeReal = 0.01
    target: Literal["regression", "binary", "multiclass"] = "regression"
    classes: Annotated[int, Field(ge=2, le=MAX_CLASSES)] = 4

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticCorrelated":
        if self.rows * self.dim > MAX_VALUES:
            raise ValueError(f"rows x dim = {self.rows * self.dim:,} values; at most "
                             f"{MAX_VALUES:,} are generated")
        return self

    def columns(self) -> dict[str, Values]:
        y = {"regression": REAL, "binary": BINARY,
             "multiclass": Values("classes", self.classes)}[self.target]
        return {**{f"x_{i}": REAL for i in range(self.dim)}, "y1": y, "y2": y}


FUNNEL_LABELS = ("click", "daction", "oaction", "purchase", "activation")


class SyntheticFunnel(SyntheticSource):
    """Impression -> click -> D-action (cart/wish) or O-action -> purchase -> activation,
    each step a logistic function of user/item factors and dense features."""

    rows: Annotated[int, Field(ge=10, le=MAX_ROWS)] = 50000
    seed: Seed = 0
    users: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 2000
    items: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 1000
    categories: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 50
    dense: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 4
    factors: Annotated[int, Field(ge=1, le=MAX_EXPERTS)] = 4
    ctr: Annotated[float, Field(gt=0, lt=1)] = 0.1
    # DUPN (issue 15): `history=L` adds a column `history`, 1..L items per row ("3|17|5")
    # drawn from those the user's click factors favour; 0 (the default) adds none.
    history: Annotated[int, Field(ge=0, le=MAX_SEQUENCE)] = 0

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticFunnel":
        values = self.rows * (self.dense + 8 + self.history) + (self.users + self.items) * \
            self.factors
        if values > MAX_VALUES:
            raise ValueError(f"rows x (dense + 8) + (users + items) x factors = {values:,} "
                             f"values; at most {MAX_VALUES:,} are generated")
        return self

    def columns(self) -> dict[str, Values]:
        return {"user": IDS, "item": IDS, "category": IDS,
                **{f"d_{i}": REAL for i in range(self.dense)},
                **dict.fromkeys(FUNNEL_LABELS, BINARY),
                **({"history": TEXT} if self.history else {})}


Fraction = Annotated[float, Field(gt=0, lt=1)]


class CsvOptions(Params):
    """How a CSV file is read. `strip`: trim spaces around text fields (raw UCI files
    separate fields by ", "); `skip_rows`: junk lines before the header (the Adult test
    file's `|1x3 Cross validator`); `comment`: lines starting with it are skipped;
    `encoding`: the file's text encoding (MovieLens-100K is latin-1)."""

    sep: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    columns: tuple[str, ...] | None = None
    na: tuple[str, ...] = ("", "NA", "NaN", "nan", "?")
    strip: bool = True
    skip_rows: Annotated[int, Field(ge=0, le=MAX_ROWS)] = 0
    comment: str | None = Field(None, min_length=1, max_length=1)
    encoding: str = Field("utf8", min_length=1, max_length=40)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (e.g. utf8, latin-1, cp1252)")
        return v


# --- joins (data frictions, issue 11): side tables joined to every file of a source ---
def _join_call(value: Any) -> Any:
    """A `csv("users.csv", on=user_id)` call inside `join=[...]` as the fields of JoinTable
    (its kind and its arguments); anything else is left to the model to refuse."""
    if not isinstance(value, Call):
        return value
    fields: dict[str, Any] = {"kind": value.name}
    if value.args:
        fields["path"] = plain(value.args[0])
    if len(value.args) > 1:
        fields["on"] = plain(value.args[1])
    return fields | {kw.key: plain(kw.value) for kw in value.kwargs}


class JoinTable(CsvOptions):
    """A side table joined on the key columns `on` (one name or a list): `how=inner` drops
    the rows without a match, `how=left` keeps them with missing values. CSV options apply
    to `csv(...)`; `parquet(...)` takes only path, on, how."""

    kind: Literal["csv", "parquet"]
    path: str = Field(min_length=1)
    on: tuple[str, ...] = Field(min_length=1)
    how: Literal["inner", "left"] = "inner"

    @model_validator(mode="before")
    @classmethod
    def _from_call(cls, value: Any) -> Any:
        value = _join_call(value)
        if isinstance(value, dict) and isinstance(value.get("on"), str):
            value = value | {"on": (value["on"],)}
        return value


class FileSource(Params):
    """One `path` split by `split=` fractions (train, val[, test]; else `train val=`),
    stratified on the binary label `stratify=` (else a binary first task); or named
    `train=`, `val=` and optional `test=` files. Paths are relative to the spec."""

    path: str | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None
    split: tuple[Fraction, ...] | None = None
    stratify: str | None = None
    join: tuple[JoinTable, ...] = ()

    @field_validator("split")
    @classmethod
    def _fractions(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and (len(v) not in (2, 3) or abs(sum(v) - 1) > 1e-6):
            raise ValueError("split= is [train, val] or [train, val, test], summing to 1")
        return v


class CsvSource(CsvOptions, FileSource):
    """A CSV source (options in CsvOptions; files and split in FileSource)."""


class ParquetSource(FileSource):
    """`stream=true`: training reads record batches through a shuffle buffer of `buffer`
    rows instead of loading the file (bounded memory)."""

    stream: bool = False
    buffer: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 65536


class TemplateParams(Params):
    """What every template takes: the tasks it builds a branch for, each once."""

    tasks: tuple[str, ...] = Field(min_length=2)

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("each task may appear only once")
        return v


class PleParams(TemplateParams):
    """A PLE template: `levels` CGC levels expanded into ordinary experts and gates."""

    levels: Annotated[int, Field(ge=1, le=MAX_LEVELS)] = 2
    specific: Count = 1
    shared: Count = 1
    expert: MLPParams
    gate: SoftmaxGateParams = SoftmaxGateParams()


class CgcParams(PleParams):
    """CGC is a single PLE level."""

    levels: Literal[1] = 1


class HeacParams(TemplateParams):
    """MetaHeac (Zhu et al. 2021): shared experts and shared critics; per task, an expert gate
    and a critic gate computed from a learnt task embedding (and the input when
    `gate_input=both`). Expands into ordinary nodes like the PLE template."""

    experts: Count = 8
    critics: Count = 4
    expert: MLPParams
    critic: MLPParams = MLPParams()
    task_dim: Annotated[int, Field(ge=1, le=MAX_DIM)] = 16
    gate_input: Literal["task", "both"] = "both"

    @field_validator("critic")
    @classmethod
    def _gated_critics_have_layers(cls, v: MLPParams) -> MLPParams:
        """HoME's feature gate sits on a critic's layers: with no widths there are none."""
        if v.feature_gate and not v.widths:
            raise ValueError("a critic's feature_gate needs hidden widths, e.g. "
                             "critic=mlp(16, feature_gate=4)")
        return v


# task columns (cross-stitch, AdaTT): the template of the task-column interactions above
class ColumnsParams(TemplateParams):
    """Task columns in `levels` levels: per level and task `specific` experts on the task's
    previous output (and `shared` experts, AdaTT-sp style), then one interaction gate per task
    (and per shared module below the last level): `mix=cross_stitch` or `mix=adatt`."""

    levels: Annotated[int, Field(ge=1, le=MAX_LEVELS)] = 2
    specific: Count = 1
    shared: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 0
    expert: MLPParams
    mix: Literal["cross_stitch", "adatt"] = "adatt"
    own: Annotated[float, Field(ge=0, le=1)] = 0.9  # cross_stitch: alpha_kk's start
    residual: Literal["linear", "gated", "none"] = "linear"  # adatt's residual

    @field_validator("mix")
    @classmethod
    def _stitch_has_no_shared(cls, v: str, info: ValidationInfo) -> str:
        if v == "cross_stitch" and info.data.get("shared"):
            raise ValueError("cross_stitch mixes the task columns only: drop shared= "
                             "or use mix=adatt")
        return v


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


@dataclass(frozen=True)
class BlockKind:
    """One entry: how a call's positional arguments map onto its parameter model."""

    name: str
    role: str
    params: type[Params]
    positional: tuple[str, ...] = ()  # a leading '*' collects the rest into a tuple
    factory: str | None = None  # "module:attr" of its implementation (a torch module, a method)
    doc: str = ""

    def implementation(self) -> Any:
        """The object `factory` names, imported on first use: the registry names the model's
        blocks and the training's methods without importing torch itself."""
        if self.factory is None:
            raise LookupError(f"registry kind '{self.name}' ({self.role}) names no implementation")
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


def _kinds(*kinds: BlockKind) -> dict[str, BlockKind]:
    return {k.name: k for k in kinds}


# role -> call name -> kind. The statement keyword decides the role.
REGISTRY: dict[str, dict[str, BlockKind]] = {
    "feature": _kinds(
        BlockKind("sparse", "feature", SparseParams, doc="categorical column -> embedding"),
        BlockKind("dense", "feature", DenseParams, ("size",), doc="numeric column(s), normalised"),
        BlockKind("sequence", "feature", SequenceParams,
                  doc="list of ids per row -> pooled embedding"),
    ),
    "input": _kinds(BlockKind("concat", "input", ConcatParams, ("*parts",),
                              doc="features side by side")),
    "net": _kinds(
        BlockKind("mlp", "net", MLPParams, ("input", "*widths"), "mtl_dsl.model.blocks:MLP",
                  "Linear -> norm -> act -> dropout per width"),
        BlockKind("pepnet", "net", PepnetParams, ("input", "*widths"),
                  "mtl_dsl.model.personal:PEPNet", "MLP with PEPNet gates from a prior"),
        BlockKind("linear", "net", LinearParams, ("input", "*widths"), "mtl_dsl.model.blocks:MLP",
                  "one Linear layer, no activation"),
    ),
    "pool": _kinds(BlockKind("attention", "pool", AttentionPoolParams,
                             doc="attention over a sequence's states (DUPN)")),
    "gate": _kinds(BlockKind("softmax", "gate", SoftmaxGateParams, ("input",),
                             "mtl_dsl.model.blocks:SoftmaxGate", "softmax(W x) over experts"),
                   # task-column interactions (cross-stitch, AdaTT, HoME)
                   BlockKind("stitch", "gate", StitchGateParams, ("input",),
                             "mtl_dsl.model.columns:StitchGate",
                             "cross-stitch: learnt constant mix of the columns"),
                   BlockKind("fusion", "gate", FusionGateParams, ("input",),
                             "mtl_dsl.model.columns:FusionGate",
                             "softmax(W x) over experts + residual of the own group"),
                   BlockKind("dselect", "gate", DSelectGateParams, ("input",),
                             "mtl_dsl.model.gates:DSelectGate",
                             "DSelect-k: k smooth-step binary selectors over experts")),
    "task": _kinds(
        BlockKind("binary", "task", BinaryTask, doc="sigmoid output, BCE loss"),
        BlockKind("regression", "task", RegressionTask, doc="linear output, MSE loss"),
        BlockKind("multiclass", "task", MulticlassTask, doc="softmax output, cross-entropy"),
    ),
    # Each method's implementation, resolved lazily by mtl_dsl.training.weighting.implementation:
    # a loss method's Weighting class (built by its `from_params`); a gradient method's
    # aggregator adapter (params, preference vector, K, device) -> Aggregate.
    "weighting": _kinds(*(BlockKind(name, "weighting", cls, factory=factory, doc=doc)
                          for name, cls, factory, doc in (
        ("fixed", FixedWeighting, "mtl_dsl.training.weighting:Weighting",
         "constant task weights"),
        ("uncertainty", UncertaintyWeighting, f"{_LOSSES}:Uncertainty", "UWL, Kendall et al."),
        ("gradnorm", GradNormWeighting, f"{_LOSSES}:GradNorm", "GradNorm, Chen et al."),
        ("dwa", DwaWeighting, f"{_LOSSES}:DWA", "dynamic weight average, Liu et al."),
        ("rlw", RlwWeighting, f"{_LOSSES}:RLW", "random loss weighting, Lin et al."),
        ("gls", GlsWeighting, f"{_LOSSES}:GLS", "geometric mean of the losses"),
        ("imtl_l", ImtlLWeighting, f"{_LOSSES}:ImtlL", "IMTL-L learnt loss scales, Liu et al."),
        ("famo", FamoWeighting, f"{_LOSSES}:FAMO", "FAMO, Liu et al."),
        ("stch", StchWeighting, f"{_LOSSES}:STCH", "smooth Tchebycheff, Lin et al."),
        ("dbmtl", DbmtlWeighting, f"{_AGG}:dbmtl", "DB-MTL dual balancing, Lin et al."),
        ("upgrad", UpgradWeighting, f"{_AGG}:upgrad", "UPGrad, Quinton & Rey (torchjd)"),
        ("mgda", MgdaWeighting, f"{_AGG}:mgda", "MGDA, Sener & Koltun (torchjd)"),
        ("pcgrad", PcgradWeighting, f"{_AGG}:pcgrad", "PCGrad, Yu et al. (torchjd)"),
        ("gradvac", GradvacWeighting, f"{_AGG}:gradvac", "Gradient Vaccine, Wang et al. (torchjd)"),
        ("cagrad", CagradWeighting, f"{_AGG}:cagrad", "CAGrad, Liu et al. (torchjd)"),
        ("imtl_g", ImtlGWeighting, f"{_AGG}:imtl_g", "IMTL-G, Liu et al. (torchjd)"),
        ("nashmtl", NashMtlWeighting, f"{_AGG}:nashmtl", "Nash-MTL, Navon et al. (torchjd)"),
        ("aligned_mtl", AlignedMtlWeighting, f"{_AGG}:aligned_mtl",
         "Aligned-MTL, Senushkin et al. (torchjd)"),
        ("dualproj", DualprojWeighting, f"{_AGG}:dualproj", "DualProj (torchjd)"),
        ("graddrop", GraddropWeighting, f"{_AGG}:graddrop", "GradDrop, Chen et al. (torchjd)"),
        ("config", ConfigWeighting, f"{_AGG}:config", "ConFIG, Liu et al. (torchjd)"),
        ("fairgrad", FairgradWeighting, f"{_AGG}:fairgrad", "FairGrad, Ban & Ji (torchjd)"),
        ("rgw", RgwWeighting, f"{_AGG}:rgw", "random gradient weighting (torchjd)"),
        ("excess_mtl", ExcessMtlWeighting, f"{_AGG}:excess_mtl", "ExcessMTL, He et al. (torchjd)"),
        ("pcd", PcdWeighting, f"{_AGG}:pcd", "priority-constrained descent (torchjd)"),
        ("sdmgrad", SdmgradWeighting, f"{_AGG}:sdmgrad", "SDMGrad, Xiao et al. (torchjd)"),
        ("modo", ModoWeighting, f"{_AGG}:modo", "MoDo, Chen et al. (torchjd)"),
        ("krum", KrumWeighting, f"{_AGG}:krum", "Krum, Byzantine-robust (torchjd)"),
        ("trimmed_mean", TrimmedMeanWeighting, f"{_AGG}:trimmed_mean",
         "trimmed mean, Byzantine-robust (torchjd)"),
        ("crmogm", CrmogmWeighting, f"{_AGG}:crmogm",
         "CR-MOGM smoothing of another method (torchjd)")))),
    "data": _kinds(
        BlockKind("synthetic.correlated", "data", SyntheticCorrelated,
                  doc="MMoE paper's two-task generator"),
        BlockKind("synthetic.funnel", "data", SyntheticFunnel,
                  doc="impression -> click -> D/O-action -> purchase -> activation"),
        BlockKind("csv", "data", CsvSource, ("path",), doc="CSV file (optionally .gz)"),
        BlockKind("parquet", "data", ParquetSource, ("path",), doc="Parquet file or folder"),
    ),
    "transfer": _kinds(
        BlockKind("ait", "transfer", AitParams, doc="AITM attention transfer + label constraint"),
        BlockKind("calibrate", "transfer", CalibrateParams, doc="label constraint only"),
        BlockKind("counterfactual", "transfer", CounterfactualParams,
                  doc="ESCM² counterfactual CVR risk (IPS or doubly robust)"),
    ),
    "extract": _kinds(
        BlockKind("ple", "extract", PleParams, ("input",), doc="PLE: stacked CGC levels"),
        BlockKind("cgc", "extract", CgcParams, ("input",), doc="CGC: one PLE level"),
        BlockKind("heac", "extract", HeacParams, ("input",),
                  doc="MetaHeac: shared experts and critics, task-embedding gates"),
        BlockKind("columns", "extract", ColumnsParams, ("input",),
                  doc="task columns in levels with a cross_stitch or adatt interaction"),
    ),
    "train": _kinds(BlockKind("train", "train", TrainParams)),
}

def kinds(role: str) -> dict[str, BlockKind]:
    return REGISTRY[role]


# Weighting method -> its parameter model (for the class-level facts: family, multiplies, ...).
WEIGHTINGS: dict[str, type[WeightingParams]] = {k: v.params for k, v in
                                                REGISTRY["weighting"].items()}
