"""Eject: a trained spec as one readable, standalone PyTorch file (torch and the standard
library only; docs/export.md).

One generator writes the file from the compiled model: the spec as its header comment;
the model's own code for the blocks the spec uses, copied verbatim from the block modules
(tools/serving/model_source.py: there is no second copy of a block to keep equal); then one
`Model` class whose `__init__` makes the very constructor calls the compiler made
(`CompiledModel.calls`, plain values only) under the compiled model's own names, so the
checkpoint's state_dict loads with strict=True, and whose `forward` is the plan
(model/steps.py) written out step by step, one emitter per step kind (`EMIT`), with each
tensor's shape as a comment, as nanoGPT's model.py does.
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
from collections.abc import Callable

import torch
import torch.nn as nn

from ...language.syntax import BinOp, Number, Ref, refs_in
from ...model import blocks as mb
from ...model import gates as mg
from ...model import steps as mp
from ...model import relations as mr
from ...model.implementations import Call
from ...training.checkpoints import Checkpoint
from . import model_source
from .signature import example_inputs, model_inputs

WIDTH = 99
BLOCKS = ("experts", "gates", "towers", "heads", "transfers")  # the model's ModuleDicts
HEADER_IMPORTS = ("import torch", "import torch.nn as nn", "from torch import Tensor")


class Namer:
    """Env keys (node names, 'emb/d16', 'z:buy') as distinct Python identifiers."""

    def __init__(self) -> None:
        self.of: dict[str, str] = {}
        self.taken = model_source.names() | {"self", "Model", "B"}

    def new(self, key: str, hint: str | None = None) -> str:
        base = re.sub(r"\W", "_", hint or key).strip("_") or "v"
        base = f"v_{base}" if base[0].isdigit() or keyword.iskeyword(base) else base
        name, i = base, 2
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        self.of[key] = name
        return name

    def __getitem__(self, key: str) -> str:
        return self.of[key]


class Writer:
    """The generated source: the copied blocks, the model's constructor and forward lines."""

    def __init__(self, ck: Checkpoint):
        self.ck, self.model = ck, ck.model
        self.names = Namer()
        self.inputs = model_inputs(ck.model, ck.encoders)
        self.args = {i["name"]: self.names.new("arg:" + i["name"], i["name"] +
                                               ("" if i["dtype"] == "float32" else "_ids"))
                     for i in self.inputs}
        self.shapes = _shapes(ck, self.inputs)
        self.body: list[str] = []
        self.used: list[object] = [mb.activate]  # the classes and functions the file calls
        self.where = _locations(ck.model)

    # ---- lines ---------------------------------------------------------------

    def line(self, target: str, expr: str, key: str | None = None, shape: str = "") -> None:
        """`target = expr`, with the shape of env `key` (or `shape`) as a comment."""
        shape = self.shapes.get(key, shape) if key is not None else shape
        comment = f"  # {shape}" if shape else ""
        text = f"        {target} = {expr}"
        if len(text) + len(comment) > WIDTH and comment:
            self.body.append("        #" + comment[3:])
            comment = ""
        self.body.append(_wrap(text) + comment)

    def var(self, key: str, hint: str | None = None) -> str:
        return self.names.new(key, hint)

    def block(self, module: nn.Module) -> str:
        return self.where[id(module)]

    def uses(self, function: Callable) -> str:
        """A model function the forward calls (copied into the file), by its name."""
        self.used.append(function)
        return function.__name__

    # ---- the file --------------------------------------------------------------

    def source(self, spec_text: str) -> str:
        for step in self.model.plan:
            EMIT[type(step)](self, step)
        outputs = [f'"{t.name}": activate("{t.kind}", {self.names[t.name]})'
                   for t in self.ck.spec.tasks]
        self.body.append(_wrap("        return {" + ", ".join(outputs) + "}", 16))
        init = self.constructor()
        copied = model_source.copy_of(self.used)
        return "\n".join(_header(self.ck, spec_text, copied.imports) + _sections(copied) +
                         ["", "", "class Model(nn.Module):",
                          f'    """{self.ck.spec.name}: forward(features) -> '
                          '{task: probability or value}."""', "",
                          "    def __init__(self):", "        super().__init__()", *init,
                          "", self.signature(), *self.body]) + "\n"

    def signature(self) -> str:
        args = ", ".join(f"{self.args[i['name']]}: Tensor" for i in self.inputs)
        return _wrap(f"    def forward(self, {args}) -> dict[str, Tensor]:")

    def constructor(self) -> list[str]:
        """`__init__`'s lines: the compiler's own calls (`CompiledModel.calls`), written out."""
        calls = self.model.calls
        out = []
        if "embeddings" in calls:
            out += self.call_lines("self.embeddings = ", calls["embeddings"], 8)
        for attr in BLOCKS:
            keys = list(getattr(self.model, attr).keys())
            if not keys:
                continue
            out.append(f"        self.{attr} = nn.ModuleDict({{")
            for key in keys:
                out += self.call_lines(f'"{key}": ', calls[f"{attr}.{key}"], 12, ",")
            out.append("        })")
        return out

    def call_lines(self, head: str, call: Call, indent: int, tail: str = "") -> list[str]:
        """`head` and the call on one line; when that is too long, its arguments packed
        under the opening bracket; when one of them is too long for that, one a line."""
        pad, inner = " " * indent, " " * (indent + 4)
        one = f"{pad}{head}{self.call(call)}{tail}"
        if len(one) <= WIDTH:
            return [one]
        parts = self.arguments(call)
        packed = _packed(f"{pad}{head}{call.cls.__name__}(", parts, f"){tail}")
        if packed is not None:
            return packed
        ends = [","] * (len(parts) - 1) + [f"){tail}"]
        return [f"{pad}{head}{call.cls.__name__}("] + \
            [_wrap(f"{inner}{part}{end}") for part, end in zip(parts, ends)]

    def call(self, call: Call) -> str:
        """A constructor call as source: its class (copied into the file) and arguments."""
        return f"{call.cls.__name__}({', '.join(self.arguments(call))})"

    def arguments(self, call: Call) -> list[str]:
        """The positional arguments, then the keyword arguments that differ from the class's
        defaults, as source."""
        self.used.append(call.cls)
        defaults = {k: p.default for k, p in inspect.signature(call.cls).parameters.items()}
        return [self.value(a) for a in call.args] + \
            [f"{k}={self.value(v)}" for k, v in call.kwargs.items()
             if not (k in defaults and _same(defaults[k], v))]

    def value(self, v: object) -> str:
        """A plain argument as a literal; the calls inside it written out too."""
        if isinstance(v, Call):
            return self.call(v)
        if isinstance(v, dict):
            items = [f"{self.value(k)}: {self.value(x)}" for k, x in v.items()]
            return "{" + ", ".join(items) + "}"
        if isinstance(v, tuple):
            items = [self.value(x) for x in v]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if isinstance(v, str):  # in double quotes, as the rest of the file writes them
            return json.dumps(v, ensure_ascii=False)
        return repr(v)


def _packed(first: str, parts: list[str], tail: str) -> list[str] | None:
    """`first` then the arguments, as many to a line as fit, continuation lines under the
    bracket that `first` ends with; None when an argument does not fit on such a line."""
    lines, current, pad = [], first, " " * len(first)
    for i, part in enumerate(parts):
        piece = part + (", " if i < len(parts) - 1 else tail)
        if current != first and len(current) + len(piece.rstrip()) > WIDTH:
            lines.append(current.rstrip())
            current = pad
        current += piece
    lines.append(current)
    return lines if all(len(line) <= WIDTH for line in lines) else None


def _same(default: object, value: object) -> bool:
    """A keyword argument equal to its default, so the call can leave it out."""
    if default is inspect.Parameter.empty or type(default) is not type(value):
        return False
    return default == value


def _sections(copied: model_source.Copy) -> list[str]:
    """The copied definitions, module by module, under a line naming their source file."""
    out = []
    for module, texts in copied.sections:
        path = module.replace(".", "/") + ".py"
        out += ["", "", f"# ---- from {path} (the model's own code, copied as it is) ----"]
        for i, text in enumerate(texts):
            out += ([""] if i == 0 else ["", ""]) + [text]
    return out


def _header(ck: Checkpoint, spec_text: str, imports: tuple[str, ...]) -> list[str]:
    """The docstring, the spec as a comment, and the imports: the standard library's, then
    torch's."""
    spec = "\n".join(f"# {line}".rstrip() for line in spec_text.strip().splitlines())
    torch_lines = sorted(set(HEADER_IMPORTS) | {i for i in imports if _is_torch(i)},
                         key=lambda line: (line.startswith("from"), line))
    std = [i for i in imports if not _is_torch(i)]
    return [f'"""{ck.spec.name}: a standalone PyTorch model ejected from its mtl-dsl spec.',
            "", "Load the trained weights with",
            "    model = Model(); model.load_state_dict(state_dict, strict=True); model.eval()",
            "where state_dict is the run's checkpoint.pt['state_dict']. Inputs are encoded",
            "features: dense float32 (B, size), sparse int64 ids (B,), sequences int64",
            "(B, max_len) padded with -1 (see the serving bundle of `mtl export`).", '"""', "",
            "# The spec:", spec, "", "from __future__ import annotations", "",
            *std, *([""] if std else []), *torch_lines]


def _is_torch(line: str) -> bool:
    return line.split()[1].split(".")[0] == "torch"


def _wrap(text: str, indent: int | None = None) -> str:
    """A long line broken after commas, continuation lines under the first bracket."""
    if len(text) <= WIDTH:
        return text
    opening = min((i for i in (text.find("("), text.find("[")) if i >= 0), default=-1)
    pad = " " * (opening + 1 if indent is None else indent)
    lines, current = [], ""
    for piece in re.split(r"(?<=, )", text):
        if current and len(current) + len(piece) > WIDTH:
            lines.append(current.rstrip())
            current = pad + piece
        else:
            current += piece
    return "\n".join(lines + [current])


def _shapes(ck: Checkpoint, inputs: list[dict]) -> dict[str, str]:
    """Env key -> '(B, 64)', from one traced batch of 3 rows."""
    batch = dict(zip((i["name"] for i in inputs), example_inputs(inputs, 3)))
    ck.model.eval()
    with torch.no_grad():
        env = ck.model.trace(batch)
    return {k: "(" + ", ".join(["B", *map(str, v.shape[1:])]) + (",)" if v.dim() == 1 else ")")
            for k, v in env.items()}


def _locations(model: nn.Module) -> dict[int, str]:
    """id(block) -> its expression in the generated model, e.g. `self.experts["bottom"]`."""
    out = {}
    for attr in BLOCKS:
        for key, module in getattr(model, attr).items():
            out[id(module)] = f'self.{attr}["{key}"]'
    return out


# ---- forward: one emitter per plan step kind --------------------------------

def _features(w: Writer, s: mp.Features) -> None:
    """Dense inputs as (B, size); one embedding lookup per dim; each sequence pooled or
    encoded (`Embeddings.block` and `Embeddings.sequence`, model/blocks.py)."""
    for name in s.dense:
        arg = w.names.of[name] = w.args[name]
        w.line(arg, f"{arg}.reshape({arg}.shape[0], -1)", name)
    emb = s.embeddings
    if emb is None:
        return
    for k, names in emb.features.items():
        ids = ", ".join(w.args[f] for f in names)
        stacked = f"torch.stack([{ids}], 1)" if len(names) > 1 else f"{ids}.unsqueeze(1)"
        w.line(w.var(mp.BLOCK + k, f"emb_{k}"), f'self.embeddings.block("{k}", {stacked})',
               mp.BLOCK + k)
    for f in s.direct:
        k, i = emb.position[f]
        w.line(w.var(f), f"{w.names[mp.BLOCK + k]}[:, {i}]", f)
    for f in [*emb.encoded, *emb.sequences]:
        query = emb.encoded[f][1] if f in emb.encoded else None
        q = ""
        if query is not None:  # DUPN: an encoded sequence's attention query
            k, i = emb.position[query]
            q = ", " + w.names.of.get(query, f"{w.names[mp.BLOCK + k]}[:, {i}]")
        w.line(w.var(f), f'self.embeddings.sequence("{f}", {w.args[f]}{q})', f)


def _concat(w: Writer, s: mp.Concat) -> None:
    parts = [w.names[k] if a is None else f"{w.names[k]}[:, {a}:{b}].flatten(1)"
             for k, a, b in s.pieces]
    expr = parts[0] if len(parts) == 1 else f"torch.cat([{', '.join(parts)}], 1)"
    w.line(w.var(s.name), expr, s.name)


def _apply(w: Writer, s: mp.Apply) -> None:
    if s.keep is not None:
        w.names.of[s.keep] = w.names[s.input]
    expr = f"{w.block(s.block)}({w.names[s.input]})" + (".squeeze(1)" if s.squeeze else "")
    w.line(w.var(s.name), expr, s.name)


def _experts(w: Writer, over, first: str) -> str:
    """The (B, n, D) experts a gate mixes: one group, or several side by side."""
    parts = [f"{w.names[g]}.unsqueeze(1)" if squeezed else w.names[g] for g, squeezed in over]
    if len(parts) == 1:
        return parts[0]
    var = w.names.new(f"experts:{first}", f"experts_{first}")
    w.line(var, f"torch.cat([{', '.join(parts)}], 1)", shape="(B, n, D)")
    return var


def _mix(w: Writer, s: mp.Mix) -> None:
    experts = _experts(w, s.over, s.names[0])
    for name, gate in zip(s.names, s.gates):
        w.line(w.var(name), f"{w.uses(mg.mix)}({w.block(gate)}({w.names[s.input]}), "
                            f"{experts})", name)


def _mix_experts(w: Writer, s: mp.MixExperts) -> None:
    experts = _experts(w, s.over, s.name)
    w.line(w.var(s.name), f"{w.uses(mg.mix)}({w.block(s.gate)}({w.names[s.input]}), "
                          f"{experts})", s.name)


def _mix_critics(w: Writer, s: mp.MixCritics) -> None:
    w.line(w.var(s.name), f"{w.uses(mr.critic_mix)}({w.block(s.gate)}({w.names[s.input]}), "
                          f"{w.names[s.critics]})", s.name)


def _interact(w: Writer, s: mp.Interact) -> None:
    experts = _experts(w, s.over, s.name)
    w.line(w.var(s.name), f"{w.block(s.block)}({w.names[s.input]}, {experts})", s.name)


def _expr(w: Writer, e) -> str:
    if isinstance(e, Ref):
        return w.names["p:" + e.name]
    if isinstance(e, Number):
        return repr(float(e.value))
    assert isinstance(e, BinOp)
    return f"({_expr(w, e.left)} {e.op} {_expr(w, e.right)})"


def _product(w: Writer, s: mp.Product) -> None:
    for ref in dict.fromkeys(r.name for r in refs_in(s.expr)):
        if "p:" + ref not in w.names.of:
            w.line(w.var("p:" + ref, f"p_{ref}"), f"torch.sigmoid({w.names[ref]})", ref)
    text = _expr(w, s.expr)
    text = text[1:-1] if text.startswith("(") and text.endswith(")") else text
    w.line(w.var(s.name), f"{w.uses(mr.logit)}({text})", s.name)


def _ait(w: Writer, s: mp.AitStep) -> None:
    key = mp.ZKEY + s.name
    w.line(w.var(key, f"z_{s.name}"), f"{w.block(s.transfer)}({w.names[s.z_prev]}, "
                                      f"{w.names[s.tower]})", key)
    w.line(w.var(s.name), f"{w.block(s.head)}({w.names[key]})", s.name)


def _rename(w: Writer, s: mp.Rename) -> None:
    w.names.of[s.name] = w.names[s.source]


def _gated(w: Writer, s: mp.Gated) -> None:
    """PEPNet: the tower on its input and its prior."""
    w.line(w.var(s.name), f"{w.block(s.block)}({w.names[s.input]}, {w.names[s.by]})", s.name)


EMIT: dict[type, Callable[[Writer, object], None]] = {
    mp.Features: _features, mp.Concat: _concat, mp.Apply: _apply, mp.Mix: _mix,
    mp.MixExperts: _mix_experts, mp.MixSelect: _mix_experts, mp.MixCritics: _mix_critics,
    mp.Product: _product, mp.AitStep: _ait, mp.Rename: _rename, mp.Interact: _interact,
    mp.Gated: _gated}


def eject(ck: Checkpoint, spec_text: str = "") -> str:
    """The standalone model file of a trained run (the spec text as its header)."""
    return Writer(ck).source(spec_text or ck.spec.source or "")
