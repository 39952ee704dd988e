"""Eject: a trained spec as one readable, standalone PyTorch file (imports torch only).

One generator writes the file from the compiled model: the spec as its header comment,
the templates of the block kinds the spec uses (tools/serving/eject_blocks.py, one per kind),
then one `Model` class whose `__init__` builds the blocks with literal sizes under the
compiled model's own names (so the checkpoint's state_dict loads with strict=True) and
whose `forward` is the plan (model/steps.py) written out step by step, one emitter per
step kind (`EMIT`), with each tensor's shape as a comment, as nanoGPT's model.py does.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ...language.syntax import BinOp, Number, Ref, refs_in
from ...model import blocks as mb
from ...model import interactions as mc
from ...model import gates as mg
from ...model import steps as mp
from ...model import relations as mr
from ...model.pepnet import Gated, PEPNet
from ...training.checkpoints import Checkpoint
from . import eject_blocks, eject_sequences
from .signature import example_inputs, model_inputs

WIDTH = 99
RESERVED = {"self", "torch", "nn", "F", "math", "mix", "logit", "critic_mix", "Tensor",
            "MLP", "B"}
ACT_NAMES = {cls: name for name, cls in mb.ACTIVATIONS.items()}


class Namer:
    """Env keys (node names, 'emb/d16', 'z:buy') as distinct Python identifiers."""

    def __init__(self) -> None:
        self.of: dict[str, str] = {}
        self.taken = set(RESERVED)

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
    """The generated source: templates, the model's constructor and forward lines."""

    def __init__(self, ck: Checkpoint):
        self.ck, self.model = ck, ck.model
        self.names = Namer()
        self.inputs = model_inputs(ck.model, ck.encoders)
        self.args = {i["name"]: self.names.new("arg:" + i["name"], i["name"] +
                                               ("" if i["dtype"] == "float32" else "_ids"))
                     for i in self.inputs}
        self.shapes = _shapes(ck, self.inputs)
        self.body: list[str] = []
        self.used: set[str] = set()
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

    # ---- the file --------------------------------------------------------------

    def source(self, spec_text: str) -> str:
        for step in self.model.plan:
            EMIT[type(step)](self, step)
        outputs = [f'"{t.name}": {_activation(t.kind, self.names[t.name])}'
                   for t in self.ck.spec.tasks]
        self.body.append(_wrap("        return {" + ", ".join(outputs) + "}"))
        init = self.constructor()
        return "\n".join(_header(self.ck, spec_text) + self.templates() +
                         ["", "", "class Model(nn.Module):",
                          f'    """{self.ck.spec.name}: forward(features) -> '
                          '{task: probability or value}."""', "",
                          "    def __init__(self):", "        super().__init__()", *init,
                          "", self.signature(), *self.body]) + "\n"

    def signature(self) -> str:
        args = ", ".join(f"{self.args[i['name']]}: Tensor" for i in self.inputs)
        return _wrap(f"    def forward(self, {args}) -> dict[str, Tensor]:")

    def constructor(self) -> list[str]:
        out = []
        emb = self.model.embeddings
        if emb is not None:
            self.used.add("Embeddings")
            tables = {k: (t.num_embeddings, t.embedding_dim) for k, t in emb.tables.items()}
            offsets = {k: getattr(emb, f"offsets_{k}").tolist() for k in emb.features}
            encoders = self.encoders(emb)
            out.append(_wrap(f"        self.embeddings = Embeddings({tables!r}, {offsets!r}"
                             f"{encoders})"))
        for attr in ("experts", "gates", "towers", "heads", "transfers"):
            blocks: nn.ModuleDict = getattr(self.model, attr)
            if len(blocks) == 0:
                continue
            out.append(f"        self.{attr} = nn.ModuleDict({{")
            for key, module in blocks.items():
                out.append(_wrap(f'            "{key}": {self.build(module)},', 16))
            out.append("        })")
        return out

    def encoders(self, emb: mb.Embeddings) -> str:
        """DUPN: the third argument of Embeddings, its sequence encoders, if any."""
        if not emb.encoders:
            return ""
        self.used.add("SequenceEncoder")
        calls = {f: "SequenceEncoder({})".format(", ".join(map(repr, _encoder_args(e))))
                 for f, e in emb.encoders.items()}
        return ", {" + ", ".join(f"{f!r}: {c}" for f, c in calls.items()) + "}"

    def build(self, m: nn.Module) -> str:
        """The template call that rebuilds module `m` (same class name, same submodules)."""
        name = type(m).__name__
        self.used.add(name)
        return f"{name}({', '.join(repr(a) for a in BUILD[type(m)](m))})"

    def templates(self) -> list[str]:
        """The templates the model uses and what they need, in the module's order."""
        wanted, todo = set(), list(self.used)
        while todo:
            n = todo.pop()
            if n not in wanted:
                wanted.add(n)
                todo += eject_blocks.NEEDS.get(n, [])
        out = []
        for module in (eject_blocks, eject_sequences):  # DUPN's templates are apart
            text = Path(module.__file__).read_text()
            for node in ast.parse(text).body:
                if _defined(node) in wanted:
                    out += ["", "", ast.get_source_segment(text, node)]
        return out


def _defined(node: ast.stmt) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def _header(ck: Checkpoint, spec_text: str) -> list[str]:
    spec = "\n".join(f"# {line}".rstrip() for line in spec_text.strip().splitlines())
    return [f'"""{ck.spec.name}: a standalone PyTorch model ejected from its mtl-dsl spec.',
            "", "Load the trained weights with",
            "    model = Model(); model.load_state_dict(state_dict, strict=True); model.eval()",
            "where state_dict is the run's checkpoint.pt['state_dict']. Inputs are encoded",
            "features: dense float32 (B, size), sparse int64 ids (B,), sequences int64",
            "(B, max_len) padded with -1 (see the serving bundle of `mtl export`).", '"""', "",
            "# The spec:", spec, "", "import math", "", "import torch",
            "import torch.nn as nn", "import torch.nn.functional as F",
            "from torch import Tensor"]


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


def _activation(kind: str, var: str) -> str:
    return {"binary": f"torch.sigmoid({var})", "multiclass": f"torch.softmax({var}, -1)"
            }.get(kind, var)


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
    for attr in ("experts", "gates", "towers", "heads", "transfers"):
        for key, module in getattr(model, attr).items():
            out[id(module)] = f'self.{attr}["{key}"]'
    return out


# ---- constructor arguments per block class ---------------------------------

def _mlp_args(net: nn.Sequential) -> tuple:
    """(widths, norm, act, dropout, feature_gate) of an MLP's [feature gate ->] Linear ->
    norm -> act -> dropout layers."""
    widths = tuple(m.out_features for m in net if isinstance(m, nn.Linear))
    norm = next(("batch" if isinstance(m, nn.BatchNorm1d) else "layer" for m in net
                 if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))), "none")
    act = next((ACT_NAMES[type(m)] for m in net if type(m) in ACT_NAMES), "none")
    drop = next((m.p for m in net if isinstance(m, nn.Dropout)), 0.0)
    rank = next((m.rank for m in net if isinstance(m, mb.FeatureGate)), 0)
    return widths, norm, act, drop, rank


def _mlp(m: mb.MLP) -> tuple:
    first = next((x for x in m.net if isinstance(x, nn.Linear)), None)
    return (first.in_features if first is not None else m.out_dim, *_mlp_args(m.net))


def _group(m: mb.ExpertGroup) -> tuple:
    norm = m.norms[0].kind if len(m.norms) else "none"
    return (m.in_dim, m.count, tuple(m.widths), norm, ACT_NAMES[type(m.act)],
            m.drop.p if m.drop is not None else 0.0, m.feature.rank if m.feature else 0)


def _critics(m: mr.Critics) -> tuple:
    if m.body is None:
        return (m.weight.shape[1], m.count, ())
    return (m.body.in_dim, m.count, *_group(m.body)[2:])


def _encoder_args(m) -> tuple:
    """(dim, encoder, pool, query_dim, width, max_len) of a model/sequences.py SequenceEncoder."""
    rnn = "none" if m.rnn is None else "gru" if isinstance(m.rnn, nn.GRU) else "lstm"
    dim = m.attention.state.in_features if m.attention is not None else None
    query = m.attention.query if m.attention is not None else None
    width = m.attention.state.out_features if m.attention is not None else None
    max_len = None
    if m.transformer is not None:  # DUPN's encoder=transformer
        rnn, (max_len, dim) = "transformer", m.transformer.position.shape
    if dim is None and m.rnn is not None:
        dim = m.rnn.input_size
    return (dim, rnn, m.mode, query.in_features if query is not None else None, width, max_len)


def _pepnet(m: PEPNet) -> tuple:
    """(in_dim, by_dim, gamma, widths, norm, act, dropout) of a PEPNet tower."""
    in_dim, widths, *rest = _mlp(m.mlp)
    gate = m.gates[0]  # (no feature gate: PepnetParams forbids one)
    return (in_dim, gate.hidden.in_features - in_dim, gate.gamma, widths, *rest[:3])


def _transfer(m: mr.Transfer) -> tuple:
    z_dim, *flow = _mlp(m.flow)
    return (z_dim, m.ait.h1.in_features, m.ait.k, *flow)


def _task_gate(m: mr.TaskGate) -> tuple:
    task_dim = m.embedding.numel()
    in_dim = m.proj.in_features - task_dim if m.use_input else 0
    return (in_dim, m.proj.out_features, task_dim, m.use_input, m.temperature)


BUILD: dict[type, Callable[[nn.Module], tuple]] = {
    mb.MLP: _mlp, mb.ExpertGroup: _group, mr.Critics: _critics, mr.Transfer: _transfer,
    mr.TaskGate: _task_gate, mb.TaskHead: lambda m: (m.proj.in_features, m.out_dim),
    mb.SoftmaxGate: lambda m: (m.proj.in_features, m.n_experts, m.temperature, m.top_k),
    mg.DSelectGate: lambda m: (m.z.in_features, m.n_experts, m.k, m.gamma),
    mc.StitchGate: lambda m: (m.alpha.numel(),),
    mc.FusionGate: lambda m: (m.gate.proj.in_features, m.gate.n_experts, m.own_count,
                              m.gate.temperature, m.residual),
    PEPNet: _pepnet}


# ---- forward: one emitter per plan step kind --------------------------------

def _features(w: Writer, s: mp.Features) -> None:
    for name in s.dense:
        arg = w.names.of[name] = w.args[name]
        w.line(arg, f"{arg}.reshape({arg}.shape[0], -1)", name)
    emb = s.embeddings
    if emb is None:
        return
    for k, names in emb.features.items():
        ids = ", ".join(w.args[f] for f in names)
        stacked = f"torch.stack([{ids}], 1)" if len(names) > 1 else f"{ids}.unsqueeze(1)"
        w.line(w.var(mp.BLOCK + k, f"emb_{k}"), f'self.embeddings("{k}", {stacked})',
               mp.BLOCK + k)
    for f in s.direct:
        k, i = emb.position[f]
        w.line(w.var(f), f"{w.names[mp.BLOCK + k]}[:, {i}]", f)
    for f, (owner, query) in emb.encoded.items():  # DUPN: encoded sequences
        key, q = f"d{emb.dim_of[owner]}", "None"
        if query is not None:
            k, i = emb.position[query]
            q = f"{w.names[mp.BLOCK + k]}[:, {i}]"
        w.line(w.var(f), f'self.embeddings.encode("{f}", "{key}", {w.args[f]}, '
                         f'{emb.offset[owner]}, {q})', f)
    for f, (owner, mode) in emb.sequences.items():
        key = f"d{emb.dim_of[owner]}"
        w.line(w.var(f), f'self.embeddings.pool("{key}", {w.args[f]}, '
                         f'{emb.offset[owner]}, "{mode}")', f)


def _concat(w: Writer, s: mp.Concat) -> None:
    parts = [w.names[k] if a is None else f"{w.names[k]}[:, {a}:{b}].flatten(1)"
             for k, a, b in s.pieces]
    expr = parts[0] if len(parts) == 1 else f"torch.cat([{', '.join(parts)}], 1)"
    w.line(w.var(s.name), expr, s.name)


def _apply(w: Writer, s: mp.Apply) -> None:
    if s.keep is not None:
        w.names.of[s.keep] = w.names[s.input]
    expr = f"{w.block(s.block)}({w.names[s.input]})" + ("[:, 0]" if s.squeeze else "")
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
        w.line(w.var(name), f"mix({w.block(gate)}({w.names[s.input]}), {experts})", name)
    w.used.add("mix")


def _mix_experts(w: Writer, s: mp.MixExperts) -> None:
    experts = _experts(w, s.over, s.name)
    w.line(w.var(s.name), f"mix({w.block(s.gate)}({w.names[s.input]}), {experts})", s.name)
    w.used.add("mix")


def _mix_critics(w: Writer, s: mp.MixCritics) -> None:
    w.line(w.var(s.name), f"critic_mix({w.block(s.gate)}({w.names[s.input]}), "
                          f"{w.names[s.critics]})", s.name)
    w.used.add("critic_mix")


def _interact(w: Writer, s: mc.Interact) -> None:
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
    w.line(w.var(s.name), f"logit({text})", s.name)
    w.used.add("logit")


def _ait(w: Writer, s: mp.AitStep) -> None:
    key = mp.ZKEY + s.name
    w.line(w.var(key, f"z_{s.name}"), f"{w.block(s.transfer)}({w.names[s.z_prev]}, "
                                      f"{w.names[s.tower]})", key)
    w.line(w.var(s.name), f"{w.block(s.head)}({w.names[key]})", s.name)


def _rename(w: Writer, s: mp.Rename) -> None:
    w.names.of[s.name] = w.names[s.source]


def _gated(w: Writer, s: Gated) -> None:
    """PEPNet: the tower on its input and its prior."""
    w.line(w.var(s.name), f"{w.block(s.block)}({w.names[s.input]}, {w.names[s.by]})", s.name)


EMIT: dict[type, Callable[[Writer, object], None]] = {
    mp.Features: _features, mp.Concat: _concat, mp.Apply: _apply, mp.Mix: _mix,
    mp.MixExperts: _mix_experts, mp.MixSelect: _mix_experts, mp.MixCritics: _mix_critics,
    mp.Product: _product, mp.AitStep: _ait, mp.Rename: _rename, mc.Interact: _interact,
    Gated: _gated}


def eject(ck: Checkpoint, spec_text: str = "") -> str:
    """The standalone model file of a trained run (the spec text as its header)."""
    return Writer(ck).source(spec_text or ck.spec.source or "")
