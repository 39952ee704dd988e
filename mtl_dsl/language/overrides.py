"""Overrides of a spec's settings from outside the file (`--data`, `--weighting`, `mtl compare
-m`): one path, so the CLI, the API and `mtl compare` change a spec the same way.

An override replaces the typed setting and is recorded in `Spec.overrides`; the source
text is never patched and re-read. :func:`as_trained` writes the text a run folder keeps:
the spec as written with each overridden statement shown as it was trained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import registry as reg
from .builder import build
from .diagnostics import MtlError, Source, errors
from .ir import Setting, Spec, make_setting
from .parser import parse


def data_setting(setting: Setting | None, path: str) -> Setting:
    """`--data PATH`: replace the spec's source by one file, keeping the CSV options and the
    split recipe (split=, stratify=) if it had them."""
    kind = "parquet" if path.endswith(".parquet") or Path(path).is_dir() else "csv"
    update = {"path": str(Path(path).resolve()), "train": None, "val": None, "test": None}
    if setting is not None and setting.kind == kind:
        params = setting.params.model_copy(update=update)
    else:
        old = setting.params if setting is not None else None
        keep = {"split": old.split, "stratify": old.stratify} \
            if isinstance(old, reg.FileSource) else {}
        params = reg.kinds("data")[kind].params(path=update["path"], **keep)
    return make_setting("data", kind, params, setting.span if setting is not None else None)


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
    The setting keeps the span of the statement it replaces (its arguments' spans were in
    the override's text, not the spec's, so they are dropped)."""
    if text is None:
        return spec
    new = weighting_setting(text)
    setting = make_setting("weighting", new.kind, new.params, spec.weighting.span)
    return spec.model_copy(update={"weighting": setting,
                                   "overrides": (*spec.overrides, ("weighting", text))})


def apply(spec: Spec, data: str | None = None, weighting: str | None = None) -> Spec:
    """Both overrides, in the order `mtl` applies them (data first)."""
    return with_weighting(with_data(spec, data), weighting)


APPLY = {"data": with_data, "weighting": with_weighting}


def reapply(spec: Spec, overrides: tuple[tuple[str, str], ...] | list) -> Spec:
    """`spec` with recorded overrides applied again (a checkpoint's spec, reloaded)."""
    for key, value in overrides:
        spec = APPLY[key](spec, value)
    return spec


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _literal(value: object) -> str:
    """A parameter value as a spec writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if _NAME.fullmatch(value) else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def written(setting: Setting) -> str:
    """A setting as a spec writes it after its keyword: the kind, with the parameters that
    differ from the defaults (e.g. 'gradnorm(alpha=1.0)')."""
    args = setting.params.model_dump(mode="json", exclude_defaults=True)
    shown = ", ".join(f"{k}={_literal(v)}" for k, v in args.items())
    return f"{setting.kind}({shown})" if shown else setting.kind


def as_trained(spec: Spec) -> str:
    """The spec's text with each overridden setting's statement written as trained (added
    at the end when the spec did not declare it): what a run folder's `spec.mtl` shows."""
    if not spec.overrides:
        return spec.source
    lines = spec.source.splitlines()
    added: list[str] = []
    replaced: list[tuple[int, int, str]] = []
    for role in dict.fromkeys(key for key, _ in spec.overrides):
        setting = spec.setting(role)
        statement = f"{role} {written(setting)}  # overridden from outside the spec"
        if setting.declared:
            replaced.append((setting.span.line, setting.span.end_line, statement))
        else:
            added.append(statement)
    for first, last, statement in sorted(replaced, reverse=True):
        lines[first - 1:last] = [statement]
    return "\n".join([*lines, *added]) + "\n"
