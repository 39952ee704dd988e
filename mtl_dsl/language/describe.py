"""What the registry says about a kind or a parameter, as plain facts and short Markdown: its
type, default, bounds and enumerated values, read from the parameter models themselves
(pydantic fields and their `ge`/`le` metadata), so an editor's hover and completion say what
validation checks (docs/editors.md)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from types import NoneType, UnionType

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import registry as reg

_BOUNDS = ((Ge, "ge", ">="), (Gt, "gt", ">"), (Le, "le", "<="), (Lt, "lt", "<"),
           (MinLen, "min_length", "at least"), (MaxLen, "max_length", "at most"))


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: its type as words, its default as written in a spec (None:
    required), its bounds, its enumerated values, and whether it is positional."""

    name: str
    type: str
    default: str | None
    bounds: tuple[str, ...]
    values: tuple[str, ...]
    positional: bool

    def markdown(self) -> str:
        parts = [f"`{self.name}`: {self.type}",
                 "required" if self.default is None else f"default `{self.default}`"]
        if self.bounds:
            parts.append(", ".join(self.bounds))
        return "; ".join(parts)


def kind(role: str, name: str) -> reg.BlockKind | None:
    """The registry's kind `name` of `role` (None: no such role or kind)."""
    return reg.REGISTRY.get(role, {}).get(name)


def params(role: str, name: str) -> list[Param]:
    """The parameters of a kind, in the model's order (none for an unknown kind)."""
    found = kind(role, name)
    if found is None:
        return []
    slots = {s.lstrip("*") for s in found.positional}
    return [_param(key, info, key in slots) for key, info in found.params.model_fields.items()]


def param(role: str, name: str, key: str) -> Param | None:
    return next((p for p in params(role, name) if p.name == key), None)


def kind_markdown(role: str, name: str) -> str | None:
    """A kind's hover: its signature, its line of documentation, its model's docstring and
    its parameters."""
    found = kind(role, name)
    if found is None:
        return None
    shown = [*found.positional, *(p.name for p in params(role, name)
                                  if p.name not in {s.lstrip("*") for s in found.positional})]
    lines = [f"**{name}**({', '.join(shown)}): {role} kind", ""]
    if found.doc:
        lines += [found.doc, ""]
    if found.params.__doc__ and found.params.__doc__ != BaseModel.__doc__:
        lines += [" ".join(found.params.__doc__.split()), ""]
    lines += [f"- {p.markdown()}" for p in params(role, name)]
    return "\n".join(lines).strip()


def _param(key: str, info, positional: bool) -> Param:
    annotation = info.annotation
    bounds = [*_bounds(info.metadata), *_bounds(_metadata(annotation))]
    return Param(key, _type(annotation), _default(info), tuple(dict.fromkeys(bounds)),
                 tuple(values(annotation)), positional)


def _default(info) -> str | None:
    if info.is_required():
        return None
    value = info.default_factory() if info.default is PydanticUndefined else info.default
    return written(value)


def written(value: object) -> str:
    """A Python value as a spec writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(written(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return f"{type(value).__name__}(...)"
    return str(value)


def _walk(annotation: object) -> typing.Iterator[object]:
    yield annotation
    if typing.get_origin(annotation) is not typing.Literal:
        for arg in typing.get_args(annotation):
            yield from _walk(arg)


def _metadata(annotation: object) -> list[object]:
    """The constraints inside Annotated[...] anywhere in an annotation."""
    return [m for t in _walk(annotation) if typing.get_origin(t) is typing.Annotated
            for m in t.__metadata__]


def _bounds(metadata: list[object]) -> list[str]:
    """Bounds in words; a pydantic `Field(ge=...)` inside Annotated keeps them in its own
    metadata."""
    out = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            out += _bounds(m.metadata)
        for cls, attr, word in _BOUNDS:
            if isinstance(m, cls):
                out.append(f"{word} {getattr(m, attr)}")
    return out


def values(annotation: object) -> list[str]:
    """The enumerated values a parameter takes as names: Literal strings, true/false."""
    found: list[str] = []
    for t in _walk(annotation):
        if typing.get_origin(t) is typing.Literal:
            found += [str(a) for a in typing.get_args(t) if isinstance(a, str)]
        elif t is bool:
            found += ["true", "false"]
    return list(dict.fromkeys(found))


def _type(annotation: object) -> str:
    """An annotation in words: integer, number, name or string, a list of ..., one of ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(written(a) for a in args)
    if origin in (typing.Union, UnionType):
        shown = [_type(a) for a in args if a is not NoneType]
        return " or ".join(dict.fromkeys(shown)) + (" or none" if NoneType in args else "")
    if origin in (tuple, list):
        return "a list of: " + _type(args[0]) if args else "a list"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a call"
    return {int: "an integer", float: "a number", str: "a name or string",
            bool: "true or false"}.get(annotation, str(annotation))
