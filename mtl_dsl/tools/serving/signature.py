"""The signature of an exported model: its inputs (the features it reads, in the
encoders' order) and outputs (one per task), shared by the exporters (tools/serving/export.py),
the ejected file's generator (tools/serving/standalone.py) and prediction through an artefact."""

from __future__ import annotations

import torch
from torch import Tensor

from ...data.encoders import Encoders
from ...data.codecs import DenseCodec, SequenceCodec
from ...model.compiler import CompiledModel


def model_inputs(model: CompiledModel, encoders: Encoders) -> list[dict]:
    """The features the model reads, in the encoders' order: name, dtype and shape (`B` is
    the batch axis; `size` a dense feature's columns, `max_len` a sequence's ids)."""
    used = set(model.used)
    out = []
    for codec in encoders.codecs:
        if codec.name not in used:
            continue
        if isinstance(codec, DenseCodec):
            out.append({"name": codec.name, "dtype": "float32",
                        "shape": ["B", len(codec.columns)]})
        elif isinstance(codec, SequenceCodec):
            out.append({"name": codec.name, "dtype": "int64", "shape": ["B", codec.max_len]})
        else:
            out.append({"name": codec.name, "dtype": "int64", "shape": ["B"]})
    return out


def model_outputs(model: CompiledModel) -> list[dict]:
    """One output per task: its kind, what the values are and the prediction columns."""
    what = {"binary": "probability", "regression": "value",
            "multiclass": "class probabilities"}
    return [{"name": t.name, "kind": t.kind, "values": what[t.kind],
             "shape": ["B"] if t.out_dim == 1 else ["B", t.out_dim],
             "columns": [t.name] if t.out_dim == 1 else
             [f"{t.name}_{c}" for c in range(t.out_dim)]} for t in model.spec.tasks]


def example_inputs(inputs: list[dict], batch: int = 4) -> tuple[Tensor, ...]:
    """Valid example tensors (id 0 is always in range) for tracing."""
    out = []
    for spec in inputs:
        shape = [batch, *spec["shape"][1:]]
        if spec["dtype"] == "float32":
            out.append(torch.zeros(shape))
        else:
            out.append(torch.zeros(shape, dtype=torch.long))
    return tuple(out)
