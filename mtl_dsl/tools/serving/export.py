"""`mtl export`: a trained run as an artefact that serves without this package's model code.

The format is the output file's suffix (`FORMATS`): `.onnx` (torch.onnx's dynamo exporter,
plus a JSON serving bundle beside it, tools/serving/bundle.py), `.pt2` (torch.export) or `.py`
(a generated standalone PyTorch file, tools/serving/standalone.py). ONNX and torch.export trace
`Served`: the compiled model behind positional inputs (one per feature the model reads,
in the encoders' order) and activated outputs (one per task), with a dynamic batch axis.
docs/export.md describes the formats and the bundle's schema.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from ...model.blocks import activate
from ...model.compiler import CompiledModel
from ...training.checkpoints import Checkpoint
from .standalone import eject
from .bundle import bundle_path
from .signature import example_inputs, model_inputs, model_outputs

FORMATS = (".onnx", ".pt2", ".py")
BUNDLE_VERSION = 1


class ExportError(ValueError):
    """A spec construct, or a file name, that cannot go to the asked format."""


class Served(nn.Module):
    """The compiled model with positional inputs and activated outputs, as exporters want."""

    def __init__(self, model: CompiledModel, names: list[str]):
        super().__init__()
        self.model, self.names = model.eval(), tuple(names)
        self.kinds = tuple((t.name, t.kind) for t in model.spec.tasks)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.model(dict(zip(self.names, inputs)))
        return tuple(activate(kind, out[name]) for name, kind in self.kinds)


def _dynamic(inputs: list[dict]) -> dict[str, tuple[dict[int, object], ...]]:
    """Axis 0 of every input is the one batch axis (`Served.forward(*inputs)`)."""
    batch = torch.export.Dim("batch", min=1)
    return {"inputs": tuple({0: batch} for _ in inputs)}


def exported_program(ck: Checkpoint) -> tuple[torch.export.ExportedProgram, list[dict]]:
    """torch.export of the run's model with a dynamic batch dimension."""
    inputs = model_inputs(ck.model, ck.encoders)
    served = Served(ck.model, [i["name"] for i in inputs])
    try:
        program = torch.export.export(served, example_inputs(inputs),
                                      dynamic_shapes=_dynamic(inputs))
    except Exception as err:  # noqa: BLE001 - torch's tracer raises many kinds
        raise _refused("torch.export", ck, inputs, err) from err
    return program, inputs


def _refused(exporter: str, ck: Checkpoint, inputs: list[dict], err: Exception) -> ExportError:
    """The exporter's refusal, naming the first block (graph node) it cannot trace."""
    first = re.sub(r"\x1b\[[0-9;]*m", "", (str(err).strip().splitlines() or [""])[0])
    node = culprit(ck.model, inputs)
    where = f" at node '{node[0]}' ({node[1]}, {node[2]})" if node else ""
    return ExportError(f"{exporter} cannot export model '{ck.spec.name}'{where}: "
                       f"{type(err).__name__}: {first}")


def culprit(model: CompiledModel, inputs: list[dict]) -> tuple[str, str, str] | None:
    """(node, kind, block class) of the first block, in plan order, that torch.export
    refuses on its own, with the inputs one traced batch gave it; None if each traces."""
    blocks = {id(m): (name.replace("-", ".").rstrip("."), kind, m) for kind, attr in BLOCKS
              for name, m in getattr(model, attr).items()}
    seen: dict[int, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.setdefault(id(mod), args))
             for _, _, m in blocks.values()]
    try:
        with torch.no_grad():
            model.eval().trace(dict(zip((i["name"] for i in inputs), example_inputs(inputs))))
    finally:
        for h in hooks:
            h.remove()
    for key, args in seen.items():
        name, kind, module = blocks[key]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.export.export(module, args)
        except Exception:  # noqa: BLE001 - any refusal names this block
            return name, kind, type(module).__name__
    return None


# where each graph node kind's blocks live in a compiled model
BLOCKS = (("expert", "experts"), ("gate", "gates"), ("tower", "towers"), ("task", "heads"),
          ("transfer", "transfers"))


def export_pt2(ck: Checkpoint, out: Path) -> Path:
    program, _ = exported_program(ck)
    torch.export.save(program, out)
    return out


def export_onnx(ck: Checkpoint, out: Path) -> Path:
    """The ONNX model (dynamo exporter) and its serving bundle beside it."""
    inputs = model_inputs(ck.model, ck.encoders)
    served = Served(ck.model, [i["name"] for i in inputs])
    outputs = model_outputs(ck.model)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # not the exporter's "torchvision is not installed" notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                served, example_inputs(inputs), dynamo=True, verbose=False,
                input_names=[i["name"] for i in inputs],
                output_names=[o["name"] for o in outputs],
                dynamic_shapes=_dynamic(inputs), report=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
        raise _refused("torch.onnx", ck, inputs, err) from err
    finally:
        quiet.setLevel(level)
    program.save(str(out), external_data=False)
    bundle_path(out).write_text(json.dumps(bundle(ck, inputs, outputs), indent=1))
    return out


def bundle(ck: Checkpoint, inputs: list[dict], outputs: list[dict]) -> dict:
    """Everything a service needs to turn raw rows into the model's inputs (the encoders)
    and name its outputs; schema: tools/serving/bundle.schema.json."""
    enc = ck.encoders.as_dict()
    read = {i["name"] for i in inputs}
    return {"format": "mtl-dsl serving bundle", "version": BUNDLE_VERSION,
            "model": ck.spec.name, "inputs": inputs, "outputs": outputs,
            "features": [f for f in enc["features"] if f["name"] in read],
            "vocabs": enc["vocabs"], "scalers": enc["scalers"]}


def export_run(ck: Checkpoint, out: str | Path, source: str = "") -> Path:
    """Write the run's model to `out` in the format its suffix names."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ExportError(f"-o must end in {', '.join(FORMATS)}, not '{out.suffix or out.name}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".onnx":
        return export_onnx(ck, out)
    if out.suffix == ".pt2":
        return export_pt2(ck, out)
    out.write_text(eject(ck, source))
    return out
