"""Overrides of a spec's settings from outside the file (`--data`, `--weighting`, `mtl compare
-m`): one path, so the CLI, the API and `mtl compare` change a spec the same way."""

from __future__ import annotations

from pathlib import Path

from . import registry as reg
from .diagnostics import MtlError, Source, Span, errors
from .ir import Setting, Spec, build
from .parser import parse

_NOWHERE = Span(1, 1, 1, 1)


def data_setting(setting: Setting | None, path: str) -> Setting:
    """`--data PATH`: replace the spec's source by one file, keeping the CSV options and the
    split recipe (split=, stratify=) if it had them."""
    kind = "parquet" if path.endswith(".parquet") or Path(path).is_dir() else "csv"
    update = {"path": str(Path(path).resolve()), "train": None, "val": None, "test": None}
    if setting is not None and setting.kind == kind:
        params = setting.params.model_copy(update=update)
    else:
        keep = {k: getattr(setting.params, k) for k in ("split", "stratify")
                if setting is not None and hasattr(setting.params, k)}
        cls = reg.CsvSource if kind == "csv" else reg.ParquetSource
        params = cls(path=str(Path(path).resolve()), **keep)
    span = setting.span if setting is not None else None
    return Setting(kind=kind, params=params, span=span or _NOWHERE)


def with_data(spec: Spec, path: str | None) -> Spec:
    """The spec reading `path` instead of its own source (unchanged when `path` is None)."""
    if path is None:
        return spec
    return spec.model_copy(update={"data": data_setting(spec.data, path),
                                   "overrides": (*spec.overrides, ("data", path))})


def weighting_setting(text: str) -> Setting:
    """A weighting as written after the `weighting` keyword (`pcgrad`, `cagrad(c=0.4)`), read
    by the same parser and registry as a spec line; a bad one raises :class:`MtlError`."""
    source = Source(f"weighting {text}\n", "--weighting")
    spec, diagnostics = build(parse(source), source.text)
    if errors(diagnostics):
        raise MtlError(errors(diagnostics), source)
    return spec.weighting


def with_weighting(spec: Spec, text: str | None) -> Spec:
    """The spec trained with another weighting method (unchanged when `text` is None).
    The spec's source text is left as written; the override is recorded in `spec.overrides`."""
    if text is None:
        return spec
    setting = weighting_setting(text).model_copy(update={"span": spec.weighting.span})
    return spec.model_copy(update={"weighting": setting,
                                   "overrides": (*spec.overrides, ("weighting", text))})


APPLY = {"data": with_data, "weighting": with_weighting}


def reapply(spec: Spec, overrides: tuple[tuple[str, str], ...] | list) -> Spec:
    """`spec` with recorded overrides applied again (a checkpoint's spec, reloaded)."""
    for key, value in overrides:
        spec = APPLY[key](spec, value)
    return spec
