"""Parameter models of the loss-weighting methods, with the facts about each method (family,
whether it multiplies `weight=`, the modules it needs, the fewest tasks) as class variables
(docs/weighting.md). The implementations are training's (training/weighting/methods.py)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .bounds import (MAX_EXPERTS, MAX_FACTOR, MAX_STEPS, Count, NonNegativeReal, Params,
                     PositiveReal, Steps)

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


# Method name -> its parameter model and a line of documentation: the registry's "weighting"
# role (kinds.py) and the methods' implementations (training/weighting/methods.py) are keyed
# by these names.
METHODS: dict[str, tuple[type[WeightingParams], str]] = {
    "fixed": (FixedWeighting, "constant task weights"),
    "uncertainty": (UncertaintyWeighting, "UWL, Kendall et al."),
    "gradnorm": (GradNormWeighting, "GradNorm, Chen et al."),
    "dwa": (DwaWeighting, "dynamic weight average, Liu et al."),
    "rlw": (RlwWeighting, "random loss weighting, Lin et al."),
    "gls": (GlsWeighting, "geometric mean of the losses"),
    "imtl_l": (ImtlLWeighting, "IMTL-L learnt loss scales, Liu et al."),
    "famo": (FamoWeighting, "FAMO, Liu et al."),
    "stch": (StchWeighting, "smooth Tchebycheff, Lin et al."),
    "dbmtl": (DbmtlWeighting, "DB-MTL dual balancing, Lin et al."),
    "upgrad": (UpgradWeighting, "UPGrad, Quinton & Rey (torchjd)"),
    "mgda": (MgdaWeighting, "MGDA, Sener & Koltun (torchjd)"),
    "pcgrad": (PcgradWeighting, "PCGrad, Yu et al. (torchjd)"),
    "gradvac": (GradvacWeighting, "Gradient Vaccine, Wang et al. (torchjd)"),
    "cagrad": (CagradWeighting, "CAGrad, Liu et al. (torchjd)"),
    "imtl_g": (ImtlGWeighting, "IMTL-G, Liu et al. (torchjd)"),
    "nashmtl": (NashMtlWeighting, "Nash-MTL, Navon et al. (torchjd)"),
    "aligned_mtl": (AlignedMtlWeighting, "Aligned-MTL, Senushkin et al. (torchjd)"),
    "dualproj": (DualprojWeighting, "DualProj (torchjd)"),
    "graddrop": (GraddropWeighting, "GradDrop, Chen et al. (torchjd)"),
    "config": (ConfigWeighting, "ConFIG, Liu et al. (torchjd)"),
    "fairgrad": (FairgradWeighting, "FairGrad, Ban & Ji (torchjd)"),
    "rgw": (RgwWeighting, "random gradient weighting (torchjd)"),
    "excess_mtl": (ExcessMtlWeighting, "ExcessMTL, He et al. (torchjd)"),
    "pcd": (PcdWeighting, "priority-constrained descent (torchjd)"),
    "sdmgrad": (SdmgradWeighting, "SDMGrad, Xiao et al. (torchjd)"),
    "modo": (ModoWeighting, "MoDo, Chen et al. (torchjd)"),
    "krum": (KrumWeighting, "Krum, Byzantine-robust (torchjd)"),
    "trimmed_mean": (TrimmedMeanWeighting, "trimmed mean, Byzantine-robust (torchjd)"),
    "crmogm": (CrmogmWeighting, "CR-MOGM smoothing of another method (torchjd)"),
}
WEIGHTINGS: dict[str, type[WeightingParams]] = {name: params for name, (params, _) in
                                                METHODS.items()}
