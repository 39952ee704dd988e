"""Reading calls through the registry: a call's arguments validated by its kind's model.

Type and range errors from pydantic are mapped back to the span of the argument
that caused them, so "dropout=1.5" points at `dropout=1.5` on its line. The
reader collects diagnostics and never raises.
"""

from __future__ import annotations

from pydantic import ValidationError

from . import registry as reg
from .syntax import Call, KwArg, ListValue, Ref, Value, plain
from .diagnostics import Diagnostic, Span, suggest

_INVALID = object()  # an argument already reported; left out so it is not reported twice

# A keyword whose value is itself a call, and the registry role it is read in.
NESTED_ROLE = {"expert": "net", "critic": "net", "gate": "gate", "transfer": "net",
               "imputation": "net",  # imputation: ESCM²'s DR tower
               "pool": "pool"}  # a sequence's attention(...) pooling (DUPN)


class Reader:
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
        hint, fix = suggest(call.name, kinds, call.name_span)
        self.diagnostics.append(Diagnostic("E209", f"unknown {what} kind '{call.name}'",
                                           call.name_span,
                                           hint or f"expected one of: {', '.join(kinds)}",
                                           fix=fix))
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
            return as_mlp(params) if params is not None else _INVALID
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
            hint, fix = suggest(key, fields, Span(span.line, span.column, span.line,
                                                  span.column + len(key)))
            self.diagnostics.append(Diagnostic(
                "E302", f"unknown parameter '{key}' for {kind.name}()", span,
                hint or f"{kind.name}() takes: {', '.join(fields) or 'nothing'}", fix=fix))
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


def as_mlp(params: reg.Params) -> reg.Params:
    if isinstance(params, reg.LinearParams):
        return reg.MLPParams(widths=params.widths, act="none")
    return params


def ref_arg(call: Call, index: int = 0) -> Ref | None:
    if len(call.args) > index and isinstance(call.args[index], Ref):
        return call.args[index]
    return None


def kw_refs(call: Call, key: str) -> tuple[Ref, ...]:
    for kw in call.kwargs:
        if kw.key == key:
            if isinstance(kw.value, Ref):
                return (kw.value,)
            if isinstance(kw.value, ListValue):
                return tuple(v for v in kw.value.items if isinstance(v, Ref))
    return ()
