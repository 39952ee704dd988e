"""The IR: frozen pydantic nodes, each knowing its span.

:mod:`.builder` makes them from the syntax tree (reading every call through the
registry's parameter models, expanding templates with :mod:`.templates`); the
graph, the validator, the diagram and the compiler read them. The settings
(data, weighting, train) are typed per kind: each role's setting is a union,
discriminated by `kind` and generated from the registry, so `setting.params` has
the exact parameter model of `setting.kind`.
"""

from __future__ import annotations

from collections import Counter
from operator import is_
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model

from . import registry as reg
from .syntax import Ref, refs_in
from .diagnostics import Span


class Node(BaseModel):
    """Every IR node: a name and where it was declared."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    span: Span


class Feature(Node):
    kind: Literal["sparse", "dense", "sequence"]
    params: Union[reg.SequenceParams, reg.SparseParams, reg.DenseParams]

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns this feature reads."""
        p = self.params
        if isinstance(p, reg.DenseParams) and p.size > 1:
            base = p.column or self.name
            return tuple(f"{base}_{i}" for i in range(p.start, p.start + p.size))
        return (p.column or self.name,)

    @property
    def width(self) -> int:
        return self.params.size if self.kind == "dense" else self.params.dim

    @property
    def query(self) -> str | None:
        """The feature a sequence's attention pooling is queried by (DUPN), if any."""
        if self.kind == "sequence" and isinstance(self.params.pool, reg.AttentionPoolParams):
            return self.params.pool.query
        return None

    @property
    def embedded(self) -> bool:
        """Looked up in an embedding table: sparse ids, or a sequence of them."""
        return self.kind in ("sparse", "sequence")


class Input(Node):
    parts: tuple[Ref, ...]


class ExpertGroup(Node):
    count: int
    input: Ref
    net: reg.MLPParams
    group: str | None = None  # the template (e.g. PLE level) that generated it


class Gate(Node):
    """softmax(W x) over expert groups; MetaHeac's gates also read a learnt embedding of
    `task` (`task_embedding` wide; `use_input=False`: from it alone), and its critic gates
    (`mixes="critics"`) mix the critics' predictions instead of expert outputs."""

    input: Ref
    over: tuple[Ref, ...]
    # softmax (its noisy top-k and balance options), DSelect-k, or a task-column interaction
    # (stitch, fusion: the first group is the task's own)
    params: Union[reg.SoftmaxGateParams, reg.DSelectGateParams, reg.StitchGateParams,
                  reg.FusionGateParams] = reg.SoftmaxGateParams()
    group: str | None = None
    task: str | None = None
    task_embedding: int | None = None
    use_input: bool = True
    mixes: Literal["experts", "critics"] = "experts"


class Critics(Node):
    """MetaHeac's shared critics: `count` towers, each giving one logit, applied to each
    task's mixed representation (`inputs`, one per task in `tasks` order)."""

    count: int
    inputs: tuple[Ref, ...]
    tasks: tuple[str, ...]
    net: reg.MLPParams
    group: str | None = None


class Tower(Node):
    input: Ref
    net: reg.MLPParams


class DerivedLabel(Node):
    """`label NAME = EXPR`: a label computed from data columns (`click & purchase`)."""

    expr: Any  # an ast_nodes.Expr (frozen dataclasses, checked by the validator)

    @property
    def refs(self) -> list[Ref]:
        return refs_in(self.expr)


class Task(Node):
    """A supervised output: from a tower, or (`product`) from other tasks' probabilities."""

    kind: Literal["binary", "regression", "multiclass"]
    params: Union[reg.BinaryTask, reg.RegressionTask, reg.MulticlassTask]
    tower: Ref | None = None
    label: Ref
    product: Any = None  # an ast_nodes.Expr over task names, e.g. ctr * cvr
    where: Ref | None = None

    @property
    def out_dim(self) -> int:
        return self.params.classes if self.kind == "multiclass" else 1

    @property
    def has_loss(self) -> bool:
        return self.params.loss != "none"

    @property
    def factors(self) -> list[Ref]:
        return refs_in(self.product) if self.product is not None else []


class Transfer(Node):
    """Edges between tasks along `chain`: AIT attention, the label constraint alone, or
    ESCM²'s counterfactual regulariser (a CTR -> CVR pair)."""

    kind: Literal["ait", "calibrate", "counterfactual"]
    chain: tuple[Ref, ...]
    params: Union[reg.AitParams, reg.CalibrateParams, reg.CounterfactualParams]

    @property
    def edges(self) -> list[tuple[str, str]]:
        names = [r.name for r in self.chain]
        return list(zip(names, names[1:]))


class Extract(Node):
    """A template as written (PLE, CGC, MetaHeac); `outputs` maps task -> the node its tower
    (or, for MetaHeac, the task itself) reads."""

    kind: Literal["ple", "cgc", "heac", "columns"]
    input: Ref
    params: Union[reg.PleParams, reg.HeacParams, reg.ColumnsParams]
    task_refs: tuple[Ref, ...]
    outputs: dict[str, str]


class Setting(BaseModel):
    """A single-statement setting (data, weighting, train): its kind, its parameters and where
    the spec wrote it. `span` is None for a setting the spec does not declare (the default
    weighting and train); an override keeps the span of the statement it replaces."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    kind: str
    params: reg.Params
    span: Span | None = None
    arg_spans: dict[str, Span] = {}

    @property
    def declared(self) -> bool:
        """Whether the spec has a statement for this setting."""
        return self.span is not None

    def at(self, key: str) -> Span | None:
        """Where argument `key` was written, else the statement (None: not declared)."""
        return self.arg_spans.get(key, self.span)


def _kind_setting(role: str, kind: reg.BlockKind) -> type[Setting]:
    """The setting of one registry kind: `kind` is its name, `params` its exact model."""
    name = "".join(part.title() for part in kind.name.replace(".", "_").split("_"))
    name = "" if kind.name == role else name
    return create_model(f"{name}{role.title()}Setting", __base__=Setting, __module__=__name__,
                        kind=(Literal[kind.name], kind.name), params=(kind.params, ...))


SETTING_ROLES = ("data", "weighting", "train")
# role -> kind -> its setting class, one per registry entry (a new kind is one registry line).
SETTING_CLASSES: dict[str, dict[str, type[Setting]]] = {
    role: {name: _kind_setting(role, kind) for name, kind in reg.kinds(role).items()}
    for role in SETTING_ROLES}


def _union(role: str) -> Any:
    classes = tuple(SETTING_CLASSES[role].values())
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="kind")]


DataSetting = _union("data")
WeightingSetting = _union("weighting")
TrainSetting = _union("train")


def make_setting(role: str, kind: str, params: reg.Params, span: Span | None = None,
                 arg_spans: dict[str, Span] | None = None) -> Setting:
    """The typed setting of `role` for `kind` (a validation error if `params` is not exactly
    that kind's model)."""
    return SETTING_CLASSES[role][kind](kind=kind, params=params, span=span,
                                       arg_spans=arg_spans or {})


class Spec(BaseModel):
    """A whole model, as the user wrote it, after template expansion."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    description: str | None = None
    path: str | None = None
    source: str = ""
    data: Optional[DataSetting] = None
    features: tuple[Feature, ...] = ()
    labels: tuple[Ref, ...] = ()
    derived_labels: tuple[DerivedLabel, ...] = ()
    inputs: tuple[Input, ...] = ()
    experts: tuple[ExpertGroup, ...] = ()
    gates: tuple[Gate, ...] = ()
    towers: tuple[Tower, ...] = ()
    critics: tuple[Critics, ...] = ()
    tasks: tuple[Task, ...] = ()
    extracts: tuple[Extract, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    # Changes made from outside the file (`--data`, `--weighting`, `mtl compare -m`), in the
    # order applied, as (setting, value as written): recorded so a run can say what it trained
    # and a checkpoint can re-apply them to its stored source (language/overrides.py).
    overrides: tuple[tuple[str, str], ...] = ()
    broken: frozenset[str] = frozenset()  # declared, but their parameters were invalid
    broken_refs: frozenset[str] = frozenset()  # names that broken statements refer to
    weighting: WeightingSetting = make_setting("weighting", "fixed", reg.FixedWeighting())
    train: TrainSetting = make_setting("train", "train", reg.TrainParams())
    # Lookups built once per set of node tuples (validation asks them per reference, and a
    # 100 KB spec has thousands); keyed by the tuples themselves, so a model_copy that
    # replaces the tasks or the features gets fresh ones.
    _memo: dict = PrivateAttr(default_factory=dict)

    def _memoised(self, key: str, parts: tuple, make):
        memo = self.__pydantic_private__["_memo"]  # pydantic's __getattr__ is slow here
        hit = memo.get(key)
        if hit is None or not all(map(is_, hit[0], parts)):
            hit = memo[key] = (parts, make())
        return hit[1]

    def _node_tuples(self) -> tuple:
        return (self.features, self.inputs, self.experts, self.gates, self.towers, self.critics,
                self.tasks)

    def nodes(self) -> list[Node]:
        return [n for part in self._node_tuples() for n in part]

    def node(self, name: str) -> Node | None:
        return self.index().get(self.resolve(name))

    def index(self) -> dict[str, Node]:
        """Name -> node (the last declared of a name declared twice: E202)."""
        return self._memoised("index", self._node_tuples(), lambda: {
            n.name: n for n in self.nodes()})

    def declared(self, name: str) -> int:
        """How many nodes are declared under `name` (more than one is E202); counted once for
        all names, as validation asks it per task."""
        counts = self._memoised("declared", self._node_tuples(), lambda: Counter(
            n.name for n in self.nodes()))
        return counts[name]

    def aliases(self) -> dict[str, str]:
        return self._memoised("aliases", (self.extracts,), lambda: {
            f"{e.name}.{t}": g for e in self.extracts for t, g in e.outputs.items()})

    def resolve(self, name: str) -> str:
        """A template output like `p.ctr` names the gate it expands to."""
        return self.aliases().get(name, name) if self.extracts else name

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def setting(self, role: str) -> Setting | None:
        """The setting of a role in SETTING_ROLES (data is None when the spec names none)."""
        return {"data": self.data, "weighting": self.weighting, "train": self.train}[role]

    def task(self, name: str) -> Task:
        """The task of that name (KeyError when there is none)."""
        return self._memoised("tasks", (self.tasks,), lambda: {
            t.name: t for t in reversed(self.tasks)})[name]

    @property
    def label_names(self) -> list[str]:
        """Declared label columns and derived labels: what `label=` and `where=` may name."""
        return [r.name for r in self.labels] + [d.name for d in self.derived_labels]

    @property
    def supervised(self) -> tuple[Task, ...]:
        """Tasks with a loss of their own."""
        return tuple(t for t in self.tasks if t.has_loss)
