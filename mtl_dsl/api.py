"""The Python API: load a spec, compile it, train it, in a few lines.

    import mtl_dsl as mtl
    spec = mtl.load("specs/mmoe.mtl")
    model = mtl.compile(spec)          # an nn.Module: model(batch) -> {task: output}
    run = mtl.train(spec, epochs=2)    # a run folder with metrics, checkpoint, plot

The CLI is a thin layer over the same functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .data.sources import source_columns
from .language import check as front
from .language import registry as reg
from .language.check import Checked, check_spec
from .language.diagnostics import Source
from .language.graph import TaskGraph
from .language.ir import Spec
from .language.overrides import apply

if TYPE_CHECKING:
    from .model.compiler import CompiledModel
    from .training.loop import RunResult


def check_text(text: str, name: str = "<spec>", path: str | None = None,
               data: str | None = None, weighting: str | None = None) -> Checked:
    """The whole front end, including the data source's columns (read from its header);
    `data` / `weighting` override the spec's settings (language/overrides.py)."""
    return front.check_text(text, name, path, data, source_columns, weighting)


def check_file(path: str | Path, data: str | None = None, weighting: str | None = None,
               max_params: int = reg.MAX_PARAMS) -> Checked:
    """As :func:`check_text`, reading the spec from a file (UTF-8); a model over
    `max_params` parameters is refused (E419)."""
    return front.check_file(path, data, source_columns, weighting, max_params)


def with_overrides(checked: Checked, data: str | None = None, weighting: str | None = None
                   ) -> Checked:
    """`checked` with `--data` / `--weighting` applied and validated again (data columns
    included): the one override path of the CLI, the API and `mtl compare`."""
    return checked.override(data, weighting, source_columns)


def load(path: str | Path, data: str | None = None) -> Spec:
    """A validated spec (every error at once in :class:`MtlError` otherwise)."""
    return check_file(path, data).raise_for_errors().spec


def _spec(spec: Spec | str | Path) -> Spec:
    return spec if isinstance(spec, Spec) else load(spec)


def vocab_sizes(spec: Spec) -> dict[str, int]:
    """Rows of each embedding table; `vocab=auto` tables are sized from the training split."""
    from .data.codecs import static_table_sizes
    from .data.prepare import prepare

    sizes = static_table_sizes(spec)  # vocab=N and hash=N tables need no data
    return sizes if sizes is not None else prepare(spec).encoders.vocab_sizes()


def compile(spec: Spec | str | Path, vocab: dict[str, int] | None = None) -> "CompiledModel":
    """The spec as an ``nn.Module``; auto vocabularies are sized from the data when needed."""
    from .model.compiler import compile_model

    spec = _spec(spec)
    return compile_model(spec, TaskGraph(spec), vocab if vocab is not None else vocab_sizes(spec))


def train(spec: Spec | str | Path, *, data: str | None = None, weighting: str | None = None,
          **options) -> "RunResult":
    """Train and write a run folder. `data` / `weighting` override the spec's source and
    method (a path: applied while checking it; a Spec: applied and validated again); the
    other options as :func:`mtl_dsl.training.loop.train` (epochs, out_dir, progress, seed,
    `resume=RUN_DIR` to go on with a stopped run...)."""
    if not isinstance(spec, Spec):
        return train_checked(check_file(spec, data, weighting).raise_for_errors(), **options)
    if data is None and weighting is None:
        return _run(spec, TaskGraph(spec), **options)
    source = Source(spec.source, spec.path or spec.name)
    checked = check_spec(apply(spec, data, weighting), source, source_columns)
    return train_checked(checked.raise_for_errors(), **options)


def _run(spec: Spec, graph: TaskGraph, **options) -> "RunResult":
    from .training.loop import train as run

    return run(spec, graph, **options)


def compile_checked(checked: Checked) -> "CompiledModel":
    from .model.compiler import compile_model

    return compile_model(checked.spec, checked.graph, vocab_sizes(checked.spec))


def train_checked(checked: Checked, **options) -> "RunResult":
    return _run(checked.spec, checked.graph, **options)
