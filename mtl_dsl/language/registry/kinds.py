"""The one list of valid names: role -> call name -> kind (its parameter model, how its
positional arguments map onto it, a line of documentation).

The IR builder reads calls through it, the validator and the parser's hints take their
"did you mean" from it, the renderer its roles. The implementations are keyed by the same
names in the stages that own them: model/implementations.py (blocks) and
training/weighting/methods.py (weighting methods); tests hold each table to this one."""

from __future__ import annotations

from dataclasses import dataclass

from .bounds import Params
from .data import CsvSource, ParquetSource, SyntheticCorrelated, SyntheticFunnel
from .features import AttentionPoolParams, ConcatParams, DenseParams, SequenceParams, SparseParams
from .networks import (DSelectGateParams, FusionGateParams, LinearParams, MLPParams, PepnetParams,
                       SoftmaxGateParams, StitchGateParams)
from .tasks import (AitParams, BinaryTask, CalibrateParams, CounterfactualParams, MulticlassTask,
                    RegressionTask)
from .templates import CgcParams, ColumnsParams, HeacParams, PleParams
from .training import TrainParams
from .weighting import METHODS

@dataclass(frozen=True)
class BlockKind:
    """One entry: how a call's positional arguments map onto its parameter model."""

    name: str
    role: str
    params: type[Params]
    positional: tuple[str, ...] = ()  # a leading '*' collects the rest into a tuple
    doc: str = ""


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
        BlockKind("mlp", "net", MLPParams, ("input", "*widths"),
                  doc="Linear -> norm -> act -> dropout per width"),
        BlockKind("pepnet", "net", PepnetParams, ("input", "*widths"),
                  doc="MLP with PEPNet gates from a prior"),
        BlockKind("linear", "net", LinearParams, ("input", "*widths"),
                  doc="one Linear layer, no activation"),
    ),
    "pool": _kinds(BlockKind("attention", "pool", AttentionPoolParams,
                             doc="attention over a sequence's states (DUPN)")),
    "gate": _kinds(
        BlockKind("softmax", "gate", SoftmaxGateParams, ("input",),
                  doc="softmax(W x) over experts"),
        # task-column interactions (cross-stitch, AdaTT, HoME)
        BlockKind("stitch", "gate", StitchGateParams, ("input",),
                  doc="cross-stitch: learnt constant mix of the columns"),
        BlockKind("fusion", "gate", FusionGateParams, ("input",),
                  doc="softmax(W x) over experts + residual of the own group"),
        BlockKind("dselect", "gate", DSelectGateParams, ("input",),
                  doc="DSelect-k: k smooth-step binary selectors over experts"),
    ),
    "task": _kinds(
        BlockKind("binary", "task", BinaryTask, doc="sigmoid output, BCE loss"),
        BlockKind("regression", "task", RegressionTask, doc="linear output, MSE loss"),
        BlockKind("multiclass", "task", MulticlassTask, doc="softmax output, cross-entropy"),
    ),
    "weighting": _kinds(*(BlockKind(name, "weighting", params, doc=doc)
                          for name, (params, doc) in METHODS.items())),
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



def kind_of(role: str, params: type[Params]) -> str:
    """The name of the kind in `role` whose parameter model is `params` (the compiler looks
    its block up by this name: a net's IR holds only its parameters)."""
    return next(name for name, k in REGISTRY[role].items() if k.params is params)
