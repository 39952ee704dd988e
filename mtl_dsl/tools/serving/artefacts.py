"""`mtl predict --model FILE`: predictions through an exported artefact instead of the
compiled model, so anyone can check that export changed nothing.

`.onnx` runs through onnxruntime with the JSON bundle beside it and never imports torch
(tools/serving/bundle.py); `.pt2` through torch.export.load; `.py` through the generated
`Model` class, loaded with the run's weights (strict=True). `.pt2` and `.py` inputs are
encoded by the checkpoint's encoders.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ...data.sources import read_file, source_columns, table_frame
from ...data.values import Frame, check_columns
from ...language.ir import Setting
from .bundle import bundle_path, columns_of, onnx_predictions

SUFFIXES = (".onnx", ".pt2", ".py")


class ArtefactError(ValueError):
    """An artefact that is missing, of an unknown kind, or not of this spec."""


def read_frame(setting: Setting, columns: list[str]) -> Frame:
    """The named columns of a data file, read with the spec's options."""
    check_columns({c: "the model" for c in columns}, source_columns(setting, Path.cwd()))
    table = read_file(setting, Path.cwd(), setting.params.path, list(dict.fromkeys(columns)))
    return table_frame(table, list(dict.fromkeys(columns)))


def check_artefact(model: Path, spec_name: str) -> None:
    """A clear error for a missing file, an unknown suffix or another model's bundle."""
    if model.suffix not in SUFFIXES:
        raise ArtefactError(f"--model must end in {', '.join(SUFFIXES)}, not "
                            f"'{model.suffix or model.name}'")
    if not model.is_file():
        raise FileNotFoundError(f"no exported model at {model}")
    if model.suffix == ".onnx":
        found = bundle_path(model)
        if not found.is_file():
            raise FileNotFoundError(f"no serving bundle at {found} (written by `mtl export` "
                                    "beside the .onnx file)")
        name = json.loads(found.read_text()).get("model")
        if name != spec_name:
            raise ArtefactError(f"{model} was exported from model '{name}', not '{spec_name}'")


def onnx_file_predictions(model: Path, setting: Setting) -> dict[str, np.ndarray]:
    """Torch-free: the bundle's columns read, encoded and run through onnxruntime."""
    from .bundle import BundleEncoder

    encoder = BundleEncoder.load(bundle_path(model))
    return onnx_predictions(model, read_frame(setting, encoder.columns))


def torch_file_predictions(model: Path, checkpoint: Path, setting: Setting,
                           batch: int = 65536) -> dict[str, np.ndarray]:
    """Through a .pt2 program or an ejected .py file, inputs encoded by the checkpoint."""
    from .predict import open_run

    ck = open_run(checkpoint)
    return frame_predictions(model, ck, read_frame(setting, ck.encoders.columns), batch)


def frame_predictions(model: Path, ck, frame: Frame, batch: int = 65536
                      ) -> dict[str, np.ndarray]:
    """A .pt2 or .py artefact's predictions for a frame, encoded by the checkpoint."""
    import torch

    from .signature import model_inputs, model_outputs

    names = [i["name"] for i in model_inputs(ck.model, ck.encoders)]
    arrays = ck.encoders.encode(frame)
    run = _loaded(model, ck)
    outputs = model_outputs(ck.model)
    n = len(next(iter(arrays.values()))) if arrays else 0
    chunks: list[list[np.ndarray]] = [[] for _ in outputs]
    with torch.no_grad():
        for start in range(0, n, batch):
            xs = [torch.from_numpy(np.array(arrays[k][start:start + batch]))  # writable
                  for k in names]
            for j, y in enumerate(run(*xs)):
                chunks[j].append(y.float().numpy())
    return columns_of(outputs, chunks)


def _loaded(model: Path, ck):
    """A callable returning one tensor per task, in the spec's order."""
    import torch

    if model.suffix == ".pt2":
        return torch.export.load(str(model)).module()
    spec = importlib.util.spec_from_file_location(f"ejected_{model.stem}", model)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Model()
    net.load_state_dict(ck.model.state_dict(), strict=True)
    net.eval()
    tasks = [t.name for t in ck.spec.tasks]

    def call(*xs):
        out = net(*xs)
        return [out[t] for t in tasks]
    return call
