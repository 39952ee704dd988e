"""The IR: frozen pydantic nodes, each knowing its span, built from the syntax tree.

Building the IR reads every call through the block registry's parameter
models. Type and range errors from pydantic are mapped back to the span of the
argument that caused them, so "dropout=1.5" points at `dropout=1.5` on its line.
Template statements (PLE/CGC) are expanded here into ordinary expert groups and
gates, which the graph, the diagram and the compiler then treat like any other.
Cross-references are *not* checked here: that is :mod:`mtl_dsl.validate`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from . import registry as reg
from .syntax import Call, KwArg, ListValue, Ref, Statement, Value, plain, refs_in
from .diagnostics import Diagnostic, Span, did_you_mean


class Node(BaseModel):
    """Every IR node: a name and where it was declared."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    params: reg.SoftmaxGateParams = reg.SoftmaxGateParams()
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
    """Edges between tasks along `chain`: AIT attention, or the label constraint alone."""

    kind: Literal["ait", "calibrate"]
    chain: tuple[Ref, ...]
    params: Union[reg.AitParams, reg.CalibrateParams]

    @property
    def edges(self) -> list[tuple[str, str]]:
        names = [r.name for r in self.chain]
        return list(zip(names, names[1:]))


class Extract(Node):
    """A template as written (PLE, CGC, MetaHeac); `outputs` maps task -> the node its tower
    (or, for MetaHeac, the task itself) reads."""

    kind: Literal["ple", "cgc", "heac"]
    input: Ref
    params: Union[reg.PleParams, reg.HeacParams]
    task_refs: tuple[Ref, ...]
    outputs: dict[str, str]


class Setting(BaseModel):
    """A single-statement setting (data, weighting, train) with its span."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    params: reg.Params
    span: Span
    arg_spans: dict[str, Span] = {}


class Spec(BaseModel):
    """A whole model, as the user wrote it, after template expansion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str | None = None
    path: str | None = None
    source: str = ""
    data: Setting | None = None
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
    weighting: Setting = Setting(kind="fixed", params=reg.FixedWeighting(), span=Span(1, 1, 1, 1))
    train: Setting = Setting(kind="train", params=reg.TrainParams(), span=Span(1, 1, 1, 1))

    def nodes(self) -> list[Node]:
        return [*self.features, *self.inputs, *self.experts, *self.gates, *self.towers,
                *self.critics, *self.tasks]

    def node(self, name: str) -> Node | None:
        return self.index().get(self.resolve(name))

    def index(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes()}

    def aliases(self) -> dict[str, str]:
        return {f"{e.name}.{t}": g for e in self.extracts for t, g in e.outputs.items()}

    def resolve(self, name: str) -> str:
        """A template output like `p.ctr` names the gate it expands to."""
        return self.aliases().get(name, name)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)

    @property
    def label_names(self) -> list[str]:
        """Declared label columns and derived labels: what `label=` and `where=` may name."""
        return [r.name for r in self.labels] + [d.name for d in self.derived_labels]

    @property
    def supervised(self) -> tuple[Task, ...]:
        """Tasks with a loss of their own."""
        return tuple(t for t in self.tasks if t.has_loss)


# --------------------------------------------------------------------------
# Reading calls through the registry
# --------------------------------------------------------------------------

_INVALID = object()  # an argument already reported; left out so it is not reported twice

# A keyword whose value is itself a call, and the registry role it is read in.
NESTED_ROLE = {"expert": "net", "critic": "net", "gate": "gate", "transfer": "net"}


class _Reader:
    """Collects diagnostics while calls are read; never raises."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.broken: set[str] = set()
        self.broken_refs: set[str] = set()

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None):
        self.diagnostics.append(Diagnostic(code, message, span, hint))

    def kind(self, role: str, call: Call, what: str) -> reg.BlockKind | None:
        kinds = reg.kinds(role)
        if call.name in kinds:
            return kinds[call.name]
        hint = did_you_mean(call.name, kinds) or f"expected one of: {', '.join(kinds)}"
        self.error("E209", f"unknown {what} kind '{call.name}'", call.name_span, hint)
        return None

    def params(self, kind: reg.BlockKind, call: Call, skip: tuple[str, ...] = (),
               drop: tuple[str, ...] = ()) -> tuple[reg.Params | None, dict[str, Span]]:
        """Validate a call's arguments with its kind's model; map errors to spans.

        `skip`: slots whose argument the caller already took (e.g. the input reference);
        `drop`: slots this call does not have at all (a nested `expert=mlp(32, 16)`)."""
        data: dict = {}
        spans: dict[str, Span | list[Span]] = {}
        args = list(call.args)
        for slot in (s for s in kind.positional if s not in drop):
            if slot in skip:
                if args:
                    args.pop(0)
                continue
            if slot.startswith("*"):
                key = slot[1:]
                data[key] = [plain(a) for a in args]
                spans[key] = [a.span for a in args]
                args = []
            elif args:
                arg = args.pop(0)
                data[slot], spans[slot] = plain(arg), arg.span
        if args:
            named = [f for f in kind.params.model_fields if f"*{f}" not in kind.positional
                     and f not in kind.positional]
            self.error("E303", f"too many positional arguments for {kind.name}()",
                       args[0].span, f"name the value ({_text(args[0])}); {kind.name}() takes "
                       f"by name: {', '.join(named)}")
        for kw in call.kwargs:
            if kw.key in data:
                self.error("E304", f"'{kw.key}' is given twice in {kind.name}()", kw.span)
                continue
            value = self._value(kw)
            if value is not _INVALID:
                data[kw.key], spans[kw.key] = value, kw.span
        try:
            return kind.params.model_validate(data), _flat(spans)
        except ValidationError as err:
            for e in err.errors():
                self._report(kind, call, e, spans)
            return None, _flat(spans)

    def _value(self, kw: KwArg):
        if isinstance(kw.value, Call) and kw.key in NESTED_ROLE:
            nested = self.kind(NESTED_ROLE[kw.key], kw.value, kw.key)
            if nested is None:
                return _INVALID
            params, _ = self.params(nested, kw.value, drop=("input",))
            return _as_mlp(params) if params is not None else _INVALID
        if isinstance(kw.value, Call):
            self.error("E305", f"'{kw.key}' takes a value, not a call", kw.value.span)
            return _INVALID
        return plain(kw.value)

    def _report(self, kind: reg.BlockKind, call: Call, e: dict, spans: dict) -> None:
        loc = e.get("loc", ())
        key = str(loc[0]) if loc else ""
        span = spans.get(key, call.span)
        if isinstance(span, list):
            span = span[loc[1]] if len(loc) > 1 and isinstance(loc[1], int) and loc[1] < len(span) \
                else call.span
        if e["type"] == "extra_forbidden":
            fields = [f for f in kind.params.model_fields]
            hint = did_you_mean(key, fields) or f"{kind.name}() takes: {', '.join(fields) or 'nothing'}"
            self.error("E302", f"unknown parameter '{key}' for {kind.name}()", span, hint)
        elif e["type"] == "missing":
            self.error("E306", f"{kind.name}() needs '{key}'", call.span,
                       f"add {key}=... to the call")
        else:
            where = ".".join(str(p) for p in loc)
            msg = e["msg"].removeprefix("Value error, ")
            self.error("E301", f"invalid value for '{where}' in {kind.name}(): {msg}", span,
                       _value_hint(key))


def _flat(spans: dict) -> dict[str, Span]:
    return {k: (v[0] if isinstance(v, list) and v else v) for k, v in spans.items()
            if not (isinstance(v, list) and not v)}


def _text(value: Value) -> str:
    return str(plain(value)) if not isinstance(value, Call) else value.name + "(...)"


def _value_hint(key: str) -> str | None:
    return {"dropout": "dropout is a probability in [0, 1)",
            "widths": "layer widths are positive integers",
            "alpha": "alpha must be positive; 1.5 is common",
            "sep": "one character; spaces around text fields are trimmed (strip=true), "
                   "so a \", \"-separated file takes sep=\",\""}.get(key)


def _as_mlp(params: reg.Params) -> reg.Params:
    if isinstance(params, reg.LinearParams):
        return reg.MLPParams(widths=params.widths, act="none")
    return params


def _ref_arg(call: Call, index: int = 0) -> Ref | None:
    if len(call.args) > index and isinstance(call.args[index], Ref):
        return call.args[index]
    return None


def _kw_refs(call: Call, key: str) -> tuple[Ref, ...]:
    for kw in call.kwargs:
        if kw.key == key:
            if isinstance(kw.value, Ref):
                return (kw.value,)
            if isinstance(kw.value, ListValue):
                return tuple(v for v in kw.value.items if isinstance(v, Ref))
    return ()


# --------------------------------------------------------------------------
# Statements to nodes
# --------------------------------------------------------------------------

SINGLE = ("model", "data", "weighting", "train")


def build(statements: list[Statement], text: str = "", path: str | None = None
          ) -> tuple[Spec, list[Diagnostic]]:
    """Build the IR; every problem becomes a diagnostic and the node is left out."""
    r = _Reader()
    parts: dict[str, list] = {k: [] for k in
                              ("features", "inputs", "experts", "gates", "towers", "tasks",
                               "extracts", "labels", "derived_labels", "transfers", "critics")}
    fields: dict = {"name": Path(path).stem if path else "model", "path": path, "source": text}
    seen: dict[str, Statement] = {}
    for st in statements:
        if st.keyword in SINGLE:
            if st.keyword in seen:
                first = seen[st.keyword].span
                r.error("E205", f"a spec has one '{st.keyword}' statement", st.span,
                        f"the first is at line {first.line}")
                continue
            seen[st.keyword] = st
        before = len(r.diagnostics)
        _HANDLERS[st.keyword](r, st, parts, fields)
        if len(r.diagnostics) > before:  # so nothing cascades into "unknown" or "unused"
            r.broken.add(st.name or st.keyword)
            r.broken_refs.update(_names_in(st))
    parts["features"] = _inherit_dims(parts["features"])
    for extract in list(parts["extracts"]):
        experts, gates, critics = expand_template(extract)
        parts["experts"] += experts
        parts["gates"] += gates
        parts["critics"] += critics
    spec = Spec(**fields, **{k: tuple(v) for k, v in parts.items()},
                broken=frozenset(r.broken), broken_refs=frozenset(r.broken_refs))
    return spec, r.diagnostics


def _inherit_dims(features: list[Feature]) -> list[Feature]:
    """A sparse feature without `dim` takes its shared table's dim, else the default 16."""
    index = {f.name: f for f in features}

    def dim(f: Feature, depth: int = 0) -> int:
        if f.params.dim is not None:
            return f.params.dim
        owner = index.get(f.params.share or "")
        if owner is not None and owner.embedded and depth < len(features):
            return dim(owner, depth + 1)
        return reg.DEFAULT_EMBEDDING_DIM

    return [f.model_copy(update={"params": f.params.model_copy(update={"dim": dim(f)})})
            if f.embedded and f.params.dim is None else f for f in features]


def _names_in(st: Statement) -> set[str]:
    values: list = [*st.refs, *(k.value for k in st.kwargs)]
    values += refs_in(st.expr) if st.expr is not None else []
    if st.call is not None:
        values += [*st.call.args, *(k.value for k in st.call.kwargs)]
    names = set()
    while values:
        v = values.pop()
        if isinstance(v, Ref):
            names.add(v.name)
        elif isinstance(v, ListValue):
            values += v.items
        elif isinstance(v, Call):
            values += [*v.args, *(k.value for k in v.kwargs)]
    return names


def _model(r: _Reader, st: Statement, parts, fields) -> None:
    fields["name"], fields["description"] = st.name, st.text


def _setting(role: str):
    def handle(r: _Reader, st: Statement, parts, fields) -> None:
        kind = r.kind(role, st.call, role)
        if kind is None:
            return
        params, spans = r.params(kind, st.call)
        if params is not None:
            fields[role] = Setting(kind=kind.name, params=params, span=st.span, arg_spans=spans)
    return handle


def _train(r: _Reader, st: Statement, parts, fields) -> None:
    call = Call("train", (), st.kwargs, st.span, st.span)
    params, spans = r.params(reg.kinds("train")["train"], call)
    if params is not None:
        fields["train"] = Setting(kind="train", params=params, span=st.span, arg_spans=spans)


def _feature(r: _Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("feature", st.call, "feature")
    params = kind and r.params(kind, st.call)[0]
    if params is not None:
        parts["features"].append(Feature(name=st.name, span=st.name_span, kind=kind.name,
                                         params=params))


def _label(r: _Reader, st: Statement, parts, fields) -> None:
    if st.expr is not None:
        parts["derived_labels"].append(DerivedLabel(name=st.name, span=st.name_span,
                                                    expr=st.expr))
    else:
        parts["labels"].extend(st.refs)


def _transfer(r: _Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("transfer", st.call, "transfer")
    params = kind and r.params(kind, st.call)[0]
    if params is not None:
        name = "->".join(ref.name for ref in st.refs)
        span = Span(st.refs[0].span.line, st.refs[0].span.column, st.refs[-1].span.end_line,
                    st.refs[-1].span.end_column)
        parts["transfers"].append(Transfer(name=name, span=span, kind=kind.name, chain=st.refs,
                                           params=params))


def _input(r: _Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("input", st.call, "input")
    if kind is None:
        return
    refs = tuple(a for a in st.call.args if isinstance(a, Ref))
    if len(refs) != len(st.call.args) or not refs:
        r.error("E301", "concat() takes the names of features or inputs", st.call.span)
        return
    parts["inputs"].append(Input(name=st.name, span=st.name_span, parts=refs))


def _net(r: _Reader, st: Statement, what: str):
    """Read `mlp(input, widths...)`: the input reference and the network parameters."""
    kind = r.kind("net", st.call, what)
    if kind is None:
        return None, None
    source = _ref_arg(st.call)
    if source is None:
        r.error("E306", f"{kind.name}() needs its input first, e.g. {kind.name}(x, 64)",
                st.call.span)
        return None, None
    params, _ = r.params(kind, st.call, skip=("input",))
    return source, (_as_mlp(params) if params is not None else None)


def _experts(r: _Reader, st: Statement, parts, fields) -> None:
    source, net = _net(r, st, "expert network")
    count = st.count.value if st.count is not None else 1
    if st.count is not None and count < 1:
        r.error("E301", "an expert group needs at least one expert", st.count.span)
        return
    if net is not None:
        parts["experts"].append(ExpertGroup(name=st.name, span=st.name_span, count=count,
                                            input=source, net=net))


def _tower(r: _Reader, st: Statement, parts, fields) -> None:
    source, net = _net(r, st, "tower network")
    if net is not None:
        parts["towers"].append(Tower(name=st.name, span=st.name_span, input=source, net=net))


def _with_input(r: _Reader, st: Statement, role: str, what: str):
    """Read `kind(input, ...)`: the input reference first, then the parameters."""
    kind = r.kind(role, st.call, what)
    if kind is None:
        return None, None, None
    source = _ref_arg(st.call)
    if source is None:
        r.error("E306", f"{kind.name}() needs its input first, e.g. {kind.name}(x, ...)",
                st.call.span)
        return None, None, None
    params, _ = r.params(kind, st.call, skip=("input",))
    return kind, source, params


def _gate(r: _Reader, st: Statement, parts, fields) -> None:
    kind, source, params = _with_input(r, st, "gate", "gate")
    if params is not None:
        parts["gates"].append(Gate(name=st.name, span=st.name_span, input=source,
                                   over=st.refs, params=params))


def _task(r: _Reader, st: Statement, parts, fields) -> None:
    kind = r.kind("task", st.call, "task")
    params = kind and r.params(kind, st.call)[0]
    if params is None:
        return
    label = _kw_refs(st.call, "label")
    label_ref = label[0] if label else Ref(params.label, st.call.span)
    tower = st.refs[0] if st.expr is None else None
    where = _kw_refs(st.call, "where")
    parts["tasks"].append(Task(name=st.name, span=st.name_span, kind=kind.name, params=params,
                               tower=tower, label=label_ref, product=st.expr,
                               where=where[0] if where else None))


def _extract(r: _Reader, st: Statement, parts, fields) -> None:
    kind, source, params = _with_input(r, st, "extract", "template")
    if params is None:
        return
    if kind.name == "heac":
        outputs = {t: f"{st.name}.mix_{t}" for t in params.tasks}
    else:
        outputs = {t: f"{st.name}.l{params.levels}.gate_{t}" for t in params.tasks}
    parts["extracts"].append(Extract(name=st.name, span=st.name_span, kind=kind.name,
                                     input=source, params=params,
                                     task_refs=_kw_refs(st.call, "tasks"), outputs=outputs))


_HANDLERS = {"model": _model, "data": _setting("data"), "weighting": _setting("weighting"),
             "train": _train, "feature": _feature, "label": _label, "input": _input,
             "experts": _experts, "tower": _tower, "gate": _gate, "task": _task,
             "extract": _extract, "transfer": _transfer}


def expand_template(e: Extract) -> tuple[list[ExpertGroup], list[Gate], list[Critics]]:
    if e.kind == "heac":
        return expand_heac(e)
    return (*expand_ple(e), [])


def expand_heac(e: Extract) -> tuple[list[ExpertGroup], list[Gate], list[Critics]]:
    """MetaHeac (ARCHITECTURES.md 2): shared experts; per task an expert gate and a critic
    gate from the task's embedding (and the input); shared critics on each task's mix."""
    p, ref = e.params, (lambda name: Ref(name, e.span))
    experts = ExpertGroup(name=f"{e.name}.experts", span=e.span, count=p.experts, input=e.input,
                          net=p.expert, group=e.name)
    common = dict(span=e.span, input=e.input, group=e.name, task_embedding=p.task_dim,
                  use_input=p.gate_input == "both")
    gates = [Gate(name=f"{e.name}.gate_{t}", over=(ref(experts.name),), task=t, **common)
             for t in p.tasks]
    critics = Critics(name=f"{e.name}.critics", span=e.span, count=p.critics,
                      inputs=tuple(ref(g.name) for g in gates), tasks=p.tasks, net=p.critic,
                      group=e.name)
    mixes = [Gate(name=f"{e.name}.mix_{t}", over=(ref(critics.name),), task=t,
                  mixes="critics", **common) for t in p.tasks]
    return [experts], gates + mixes, [critics]


def expand_ple(e: Extract) -> tuple[list[ExpertGroup], list[Gate]]:
    """PLE (ARCHITECTURES.md 1): level j's task-k experts and gate read g_k^(j-1), the shared
    experts and the shared gate read g_s^(j-1); there is no shared gate on the last level."""
    p, experts, gates = e.params, [], []
    prev = {t: e.input for t in p.tasks}
    prev_shared = e.input
    for level in range(1, p.levels + 1):
        stem = f"{e.name}.l{level}"
        shared = ExpertGroup(name=f"{stem}.shared", span=e.span, count=p.shared,
                             input=prev_shared, net=p.expert, group=stem)
        specific = {t: ExpertGroup(name=f"{stem}.{t}", span=e.span, count=p.specific,
                                   input=prev[t], net=p.expert, group=stem) for t in p.tasks}
        experts += [*specific.values(), shared]
        ref = lambda name: Ref(name, e.span)  # noqa: E731
        nxt = {}
        for t in p.tasks:
            gate = Gate(name=f"{stem}.gate_{t}", span=e.span, input=prev[t],
                        over=(ref(specific[t].name), ref(shared.name)), params=p.gate, group=stem)
            gates.append(gate)
            nxt[t] = ref(gate.name)
        if level < p.levels:
            everyone = tuple(ref(g.name) for g in [*specific.values(), shared])
            gates.append(Gate(name=f"{stem}.gate_shared", span=e.span, input=prev_shared,
                              over=everyone, params=p.gate, group=stem))
            prev_shared = ref(f"{stem}.gate_shared")
        prev = nxt
    return experts, gates
