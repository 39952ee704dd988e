"""Parameter models of the tasks and of the transfers between them (AITM's adaptive transfer,
the label constraint, ESCM²'s counterfactual risk)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .bounds import MAX_CLASSES, NonNegativeReal, Params, PositiveReal, Width
from .networks import MLPParams

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


# ---- ESCM² (Wang et al., SIGIR 2022): the counterfactual CVR regulariser ----
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
