"""The checks of the statements that configure a run rather than the network: `train`
(monitor, meta-learning), `weighting` (enough tasks, something shared, solvers installed) and
`data` (the source's shape, and its columns read from the header). Part of the one validation
pass of :mod:`mtl_dsl.language.validation`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from .. import registry as reg
from ..diagnostics import SHOWN_PER_CODE, DataError, Diagnostic, did_you_mean
from ..graph import TaskGraph
from ..ir import Setting, Spec

# A data source's column names, read from its header (the data stage provides it; the
# language only knows the setting and the spec's folder).
ColumnLookup = Callable[[Setting, Path], list[str]]


def check_settings(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    train = spec.train.params
    if train.monitor is not None:
        yield from _monitor(spec, train.monitor)
    yield from check_groups(spec)
    if train.meta == "maml" and spec.transfers:
        yield Diagnostic("E603", "meta=maml trains on the tasks' query losses only, so the "
                         "label constraint of a transfer would be dropped",
                         spec.train.at("meta"),
                         "use meta=maml with MetaHeac-style models, or drop it here")
    if train.patience is not None and train.monitor is None:
        yield Diagnostic("E207", "patience= needs monitor=TASK.METRIC to know what to watch",
                         spec.train.at("patience"))
    yield from _schedule(spec)
    yield from _dense_table_gradients(spec, tg)
    method = spec.weighting.kind
    if method in ("uncertainty", "gradnorm") and len(spec.tasks) < 2:
        yield Diagnostic("E601", f"{method} weighting balances several tasks; this spec has "
                         f"{len(spec.tasks)}", spec.weighting.span, "use `weighting fixed`")
    elif method == "gradnorm" and spec.tasks and tg.acyclic and not tg.last_shared:
        yield Diagnostic("E601", "gradnorm needs parameters shared by the tasks; no block here "
                         "feeds more than one task", spec.weighting.span,
                         "share experts or a bottom between towers, or use `weighting fixed`")


def _dense_table_gradients(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """W008: tables with more than `reg.DENSE_GRADIENT_ROWS` rows (those the spec sizes)
    whose gradients must be dense, each step, because of the weighting or MAML
    (language/memory.py `dense_gradients`): every step then costs their size."""
    from ..memory import dense_gradients, used_tables

    if not tg.acyclic or spec.train.params.embedding_optimizer == "dense":
        return
    reason = dense_gradients(spec, tg)
    index = {f.name: f for f in spec.features}
    rows = sum(index[n].params.table_rows() or 0 for n in used_tables(spec, tg)) \
        if reason is not None else 0
    if rows > reg.DENSE_GRADIENT_ROWS:
        where = spec.train.at("meta") if reason.startswith("meta") else spec.weighting.span
        yield Diagnostic("W008", f"{reason}: the embedding tables' {rows:,} rows take a full "
                         "gradient every step, so a step costs their size, not its batch's",
                         where, "balance the representation (on=representation) or the dense "
                         "blocks only (embeddings=false); smaller tables (hash=, max_ids=)",
                         severity="warning")


def check_weighting(spec: Spec, tg: TaskGraph) -> Iterator[Diagnostic]:
    """The weighting method: enough tasks and something shared to balance; warnings when it
    ignores the tasks' weight= or its solvers are not installed (uncertainty's and gradnorm's
    task count and sharing are check_settings')."""
    kind, p, span = spec.weighting.kind, spec.weighting.params, spec.weighting.span
    k = len(spec.supervised)
    need = p.fewest_tasks()
    if kind not in ("fixed", "uncertainty", "gradnorm") and k < need:
        yield Diagnostic("E601", f"{kind} weighting balances at least {need} tasks with a loss; "
                         f"this spec has {k}", span, "use `weighting fixed`")
    if p.family == "gradient" and k >= 2:
        dense = [n for n in tg.shared if tg.kind(n) != "embedding"]
        tables = [n for n in tg.shared if tg.kind(n) == "embedding"]
        if not dense and not (tables and p.on == "parameters" and p.embeddings):
            hint = "set embeddings=true to balance the shared embedding tables" if tables and \
                p.on == "parameters" else "share experts or a bottom between towers, or use a " \
                "loss-based method (`weighting uncertainty`)"
            where = "representation" if p.on == "representation" else "parameters"
            yield Diagnostic("E601", f"{kind} combines the tasks' gradients on the shared "
                             f"{where}; no block here feeds more than one task", span, hint)
        if p.on == "representation" and spec.train.params.meta != "none":
            yield Diagnostic("E601", f"{kind}(on=representation) reads the representation of "
                             "one forward pass; meta-learning runs one per task", span,
                             "use on=parameters")
    missing = p.missing_modules()
    if missing:  # the spec is fine, the installation is not: training stops (E602)
        yield Diagnostic("W005", f"weighting {kind} needs {', '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed", span,
                         f"pip install '{reg.SOLVER_EXTRA}' (torchjd with its optional solvers)",
                         severity="warning")
    weighted = [t for t in spec.supervised if t.params.weight != 1.0]
    if weighted and not p.honours_weights():
        sets = ", ".join(f"{t.name} weight={t.params.weight:g}" for t in weighted[:3])
        honour = [n for n, c in reg.WEIGHTINGS.items() if c.multiplies]
        yield Diagnostic("W004", f"{kind} weighting ignores the tasks' weight= ({sets})", span,
                         f"methods that multiply them: {', '.join(honour)}", severity="warning")


# The settings only one schedule reads (registry.TrainParams); min_lr= is read by all but
# `constant`. Given for another schedule, they would be silently ignored: E215.
SCHEDULE_ONLY = {"step_size": ("step",), "gamma": ("step",), "factor": ("plateau",),
                 "lr_patience": ("plateau",),
                 "min_lr": ("linear", "cosine", "step", "plateau")}


def _schedule(spec: Spec) -> Iterator[Diagnostic]:
    """The learning-rate schedule's settings fit together (docs/language.md, E215)."""
    p, given = spec.train.params, spec.train.arg_spans
    for key, readers in SCHEDULE_ONLY.items():
        if key in given and p.schedule not in readers:
            yield Diagnostic("E215", f"{key}= is read by schedule={'|'.join(readers)} only; "
                             f"this run has schedule={p.schedule}", spec.train.at(key),
                             f"set schedule={readers[0]}, or drop {key}=")
    if p.schedule == "step" and p.step_size is None:
        yield Diagnostic("E215", "schedule=step needs step_size= (epochs between decays)",
                         spec.train.at("schedule"), "e.g. schedule=step step_size=2 gamma=0.5")
    if "min_lr" in given and p.schedule != "constant" and p.min_lr >= p.lr:
        yield Diagnostic("E215", f"min_lr={p.min_lr:g} is not below lr={p.lr:g}: the "
                         "schedule would never lower the rate", spec.train.at("min_lr"),
                         "set min_lr= below lr=")
    if "warmup" in given and "warmup_epochs" in given:
        yield Diagnostic("E215", "warm-up given twice: warmup= (steps) and warmup_epochs=",
                         spec.train.at("warmup_epochs"), "keep one of them")
    elif p.warmup_epochs >= p.epochs:
        yield Diagnostic("E215", f"warmup_epochs={p.warmup_epochs} leaves no epoch after the "
                         f"warm-up (epochs={p.epochs})", spec.train.at("warmup_epochs"),
                         "warm up for fewer epochs than the run has")


def _monitor(spec: Spec, monitor: str) -> Iterator[Diagnostic]:
    span = spec.train.at("monitor")
    task_name, _, metric = monitor.partition(".")
    names = [t.name for t in spec.tasks]
    if task_name not in names and task_name not in spec.broken:
        yield Diagnostic("E207", f"monitor names unknown task '{task_name}'", span,
                         did_you_mean(task_name, names) or "write monitor=TASK.METRIC")
        return
    if task_name in spec.broken:
        return  # the task's own error is reported
    task = spec.task(task_name)
    metrics = task.params.metrics
    if any(reg.metric_family(m) not in reg.TASK_METRICS[task.kind] for m in metrics):
        return  # the metrics list has an error of its own (E302); what it reports is unsure
    if metric not in metrics:
        yield Diagnostic("E207", f"task '{task_name}' does not report '{metric}'", span,
                         f"it reports: {', '.join(metrics)}")
    elif not reg.METRICS[reg.metric_family(metric)].selectable:
        yield Diagnostic("E207", f"monitor={monitor}: {metric} is not better when higher or "
                         "lower", span, "monitor another metric, or the task's loss")


def check_groups(spec: Spec) -> Iterator[Diagnostic]:
    """Grouped metrics (gauc, ndcg@k, recall@k) need the task's group= column (docs/data.md,
    ranking metrics)."""
    for task in spec.tasks:
        grouped = [m for m in task.params.metrics
                   if reg.metric_family(m) in reg.METRICS and
                   reg.METRICS[reg.metric_family(m)].grouped]
        if grouped and task.params.group is None:
            yield Diagnostic("E306", f"metric '{grouped[0]}' of task '{task.name}' needs "
                             "group=", task.span, "name the column whose rows form a group, "
                             "e.g. group=user_id")


def check_data(spec: Spec, tg: TaskGraph, columns: ColumnLookup | None = None
               ) -> Iterator[Diagnostic]:
    """Label and feature columns must exist in the data source (read from its header by
    `columns`; without one only the source's own shape is checked)."""
    if spec.data is None and "data" in spec.broken:
        return  # its own error is reported; "names no data source" would be a follow-on
    if spec.data is None:
        yield Diagnostic("E501", "the spec names no data source", None,
                         "add `data synthetic.correlated(rows=20000)` or `data csv(\"f.csv\")`, "
                         "or pass --data")
        return
    shape = list(_source_shape(spec))
    yield from shape
    if columns is None or any(d.severity == "error" for d in shape):
        return
    try:
        present = set(columns(spec.data, spec.base_dir))
    except DataError as err:
        for d in err.diagnostics:
            yield Diagnostic("E502", d.message, spec.data.span, d.hint)
        return
    # "did you mean" for the first few only: beyond SHOWN_PER_CODE they are folded away, and
    # 45,000 fuzzy matches would be most of the time a huge spec takes
    hints = iter(range(SHOWN_PER_CODE["error"] * 3))

    def hint(name: str, names) -> str:
        return (next(hints, None) is not None and did_you_mean(name, names)) or \
            _columns_hint(present)

    for ref in spec.labels:
        if ref.name not in present:
            yield Diagnostic("E503", f"label column '{ref.name}' is not in the data", ref.span,
                             hint(ref.name, present))
    for f in spec.features:
        missing = [c for c in f.columns if c not in present]
        if missing:
            yield Diagnostic("E504", f"feature '{f.name}' reads column '{missing[0]}', which is "
                             "not in the data" + (f" ({len(missing)} missing)" if
                                                  len(missing) > 1 else ""), f.span,
                             hint(missing[0], present))
    for t in spec.tasks:  # grouped metrics: their group= column
        if t.params.group is not None and t.params.group not in present:
            yield Diagnostic("E504", f"group= of task '{t.name}' reads column "
                             f"'{t.params.group}', which is not in the data", t.span,
                             hint(t.params.group, present))
    known = present | set(spec.label_names)
    for d in spec.derived_labels:
        for ref in d.refs:
            if ref.name not in known:
                yield Diagnostic("E506", f"label '{d.name}' reads '{ref.name}', which is neither "
                                 "a data column nor a label", ref.span,
                                 hint(ref.name, known))
    label_columns = {r.name for r in spec.labels} | {r.name for d in spec.derived_labels
                                                     for r in d.refs if r.name in present}
    leaked = label_columns & {c for f in spec.features for c in f.columns}
    for f in spec.features:
        for c in f.columns:
            if c in leaked:
                yield Diagnostic("E505", f"feature '{f.name}' reads column '{c}', which a label "
                                 "is made of", f.span,
                                 "a label used as an input leaks the answer into the model")


def _source_shape(spec: Spec) -> Iterator[Diagnostic]:
    """A file source is one path (split by split=) or named train=/val=/test= files;
    stratify= names a label."""
    p, data = spec.data.params, spec.data
    if not isinstance(p, reg.FileSource):
        return
    at = data.at
    named = [k for k, v in (("train", p.train), ("val", p.val), ("test", p.test)) if v is not None]
    if p.path is not None and named:
        yield Diagnostic("E507", f"{data.kind}() takes one path or named train=/val=/test= "
                         f"files, not both", at(named[0]),
                         "drop the path, or drop " + ", ".join(f"{k}=" for k in named))
    elif p.path is None and "train" not in named:
        yield Diagnostic("E507", f"{data.kind}() needs a path or train=", data.span,
                         f'e.g. {data.kind}("data.{data.kind}") or {data.kind}(train="a", '
                         'val="b", test="c")')
    elif p.path is None and p.split is not None:
        yield Diagnostic("E507", "split= splits one path; named train/val/test files are "
                         "the split already", at("split"), "drop split=")
    if isinstance(p, reg.ParquetSource) and p.stream and p.join:  # data frictions: joins
        yield Diagnostic("E507", "join= is not supported with stream=true: the streamed "
                         "batches are not joined", at("join"),
                         "join the tables once into a Parquet folder, or drop stream=true")
    if isinstance(p, reg.ParquetSource) and p.stream and p.stratify is not None and p.path is not None:
        yield Diagnostic("W006", "stratify= is ignored when streaming: rows are split by a "
                         "seeded hash of their position", at("stratify"),
                         "drop stratify=, or name train=/val= files", severity="warning")
    if p.stratify is not None and p.stratify not in spec.label_names:
        yield Diagnostic("E206", f"unknown label '{p.stratify}' in stratify=", at("stratify"),
                         did_you_mean(p.stratify, spec.label_names) or
                         f"declare it: `label {p.stratify}`")


def _columns_hint(columns: set[str]) -> str:
    shown = sorted(columns)
    more = f", ... ({len(shown)} in all)" if len(shown) > 8 else ""
    return "the data has: " + ", ".join(shown[:8]) + more
