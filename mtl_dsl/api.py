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
from .language.check import Checked
from .language.diagnostics import MtlError, Source, errors
from .language.graph import TaskGraph
from .language.ir import Spec, build
from .language.parser import parse

if TYPE_CHECKING:
    from .model.compiler import CompiledModel
    from .training.loop import RunResult


def check_text(text: str, name: str = "<spec>", path: str | None = None,
               data: str | None = None) -> Checked:
    """The whole front end, including the data source's columns (read from its header)."""
    return front.check_text(text, name, path, data, source_columns)


def check_file(path: str | Path, data: str | None = None) -> Checked:
    """As :func:`check_text`, reading the spec from a file (UTF-8)."""
    return front.check_file(path, data, source_columns)


def load(path: str | Path, data: str | None = None) -> Spec:
    """A validated spec (every error at once in :class:`MtlError` otherwise)."""
    return check_file(path, data).raise_for_errors().spec


def _spec(spec: Spec | str | Path) -> Spec:
    return spec if isinstance(spec, Spec) else load(spec)


def vocab_sizes(spec: Spec) -> dict[str, int]:
    """Rows of each embedding table; `vocab=auto` tables are sized from the training split."""
    from .data.plan import static_table_sizes
    from .data.prepare import prepare

    sizes = static_table_sizes(spec)  # vocab=N and hash=N tables need no data
    return sizes if sizes is not None else prepare(spec).encoders.vocab_sizes()


def compile(spec: Spec | str | Path, vocab: dict[str, int] | None = None) -> "CompiledModel":
    """The spec as an ``nn.Module``; auto vocabularies are sized from the data when needed."""
    from .model.compiler import compile_model

    spec = _spec(spec)
    return compile_model(spec, TaskGraph(spec), vocab if vocab is not None else vocab_sizes(spec))


def train(spec: Spec | str | Path, **options) -> "RunResult":
    """Train and write a run folder; options as :func:`mtl_dsl.trainer.train` (epochs, out_dir,
    weighting, progress, seed, ...)."""
    from .training.loop import train as run

    spec = _spec(spec)
    return run(spec, TaskGraph(spec), **options)


def with_weighting(checked: Checked, method: str) -> Checked:
    """Replace the spec's `weighting` statement by `weighting METHOD` (e.g. "gradnorm(alpha=2)")
    and validate again, so the run folder's copy of the spec says what was trained."""
    override = Source(f"weighting {method}\n", "--weighting")
    _, diagnostics = build(parse(override))
    if errors(diagnostics):
        raise MtlError(errors(diagnostics), override)
    spec = checked.spec
    lines = spec.source.splitlines()
    if _has_weighting(checked):
        w = spec.weighting.span
        lines[w.line - 1:w.end_line] = [f"weighting {method}"]
    else:
        lines.append(f"weighting {method}")
    text = "\n".join(lines) + "\n"
    data = None if spec.data is None else spec.data
    result = check_text(text, checked.source.name, spec.path)
    if data is not None:
        result = Checked(result.spec.model_copy(update={"data": data}), result.graph,
                         result.diagnostics, result.source)
    return result.raise_for_errors()


def _has_weighting(checked: Checked) -> bool:
    return any(st.keyword == "weighting" for st in parse(checked.source))


def compile_checked(checked: Checked) -> "CompiledModel":
    from .model.compiler import compile_model

    return compile_model(checked.spec, checked.graph, vocab_sizes(checked.spec))


def train_checked(checked: Checked, **options) -> "RunResult":
    from .training.loop import train as run

    return run(checked.spec, checked.graph, **options)
