"""Checkpoints: `checkpoint.pt` holds what a trained model needs to predict again.

Weights, the spec text as written plus the overrides applied from outside it
(`Spec.overrides`, re-applied with `mtl_dsl.language.overrides.reapply`), the data setting as
trained, the encoders and vocabulary sizes, the seed, the weighting's state, and the best
epoch with its metrics. Only plain containers and tensors, so `torch.load(weights_only=True)`
reads it.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.encoders import Encoders
from ..data.frames import needed_columns
from ..data.labels import encode_labels
from ..data.splits import split_rows
from ..data.tensors import TensorSet, to_tensors
from ..data.values import Frame, check_columns
from ..language import overrides
from ..language.diagnostics import DataError, MtlError, spec_errors
from ..language.graph import TaskGraph
from ..language.ir import Spec, make_setting
from ..language.registry import kinds
from .metrics import plain
from .state import atomic_save
from .weighting.base import Weighting

FORMAT = "mtl-dsl/2"  # 2: the spec's overrides are recorded


def save(path: Path, spec: Spec, model: nn.Module, encoders: Encoders, seed: int,
         scheme: Weighting, best_epoch: int, best: dict, tables: dict | None = None) -> int:
    """Write `checkpoint.pt` (see the module docstring for what it holds) atomically, so a
    kill during the write leaves the previous one whole; returns its size in bytes. The
    weights are the live tensors (on CPU `.cpu()` is the tensor itself): torch.save writes
    them without a second copy in memory. `tables`: where tables sharded over processes were
    written beside it (training/embeddings/sharding.py), which loading reads back."""
    data = None if spec.data is None else \
        {"kind": spec.data.kind, "params": spec.data.params.model_dump(mode="json")}
    ck = {"format": FORMAT,
          "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
          "spec_source": spec.source, "spec_name": spec.name, "spec_path": spec.path,
          "overrides": [list(pair) for pair in spec.overrides],
          "data": data, "encoders": encoders.as_dict(),
          "vocab_sizes": encoders.vocab_sizes(), "seed": seed,
          "weighting": {"kind": spec.weighting.kind, **scheme.state_dict()},
          "best_epoch": best_epoch, "best_metrics": plain(best), "tables": tables}
    return atomic_save(ck, path)


def load_weights(path: Path, model: nn.Module, engine, device: torch.device) -> None:
    """Load a checkpoint's weights into a live model (and its sharded tables into `engine`,
    training/embeddings/engine.py), memory-mapped: the file's pages are read in place, not copied
    into a second full model first."""
    ck = torch.load(path, map_location=device, weights_only=True, mmap=True)
    model.load_state_dict(ck["state_dict"])
    engine.load_tables(path, ck.get("tables"))


@dataclass
class Checkpoint:
    """A trained model rebuilt from `checkpoint.pt`, with what it needs to predict again."""

    model: nn.Module
    spec: Spec
    graph: TaskGraph
    encoders: Encoders
    meta: dict = field(default_factory=dict)

    def encode(self, frame: Frame, labels: bool = True) -> TensorSet:
        """A frame as the model's input (and labels), with the training-time encoders."""
        arrays = self.encoders.encode(frame)
        if labels:
            check_columns(needed_columns(self.spec), frame.keys())
            arrays |= encode_labels(self.spec, frame)
        return to_tensors(arrays)

    def split(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """The (train, validation) rows the run used, if `frame` is its training data."""
        return split_rows(self.spec, encode_labels(self.spec, frame), self.meta["seed"])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Re-parse the stored spec text, re-apply its overrides, recompile, load the weights and
    the encoders. Anything that is not a readable checkpoint of this FORMAT is an E703 naming
    the path and what was expected; it is read with `weights_only=True`, always."""
    from ..language.check import check_text
    from ..model.compiler import compile_model
    ck = _read(Path(path), device)
    checked = check_text(ck["spec_source"], ck["spec_path"] or ck["spec_name"], ck["spec_path"])
    found = spec_errors(checked.diagnostics)
    if found:  # data-source errors do not matter: the data may be gone by now
        raise MtlError(found, checked.source)
    spec = overrides.reapply(checked.spec, [tuple(pair) for pair in ck["overrides"]])
    spec = _with_trained_data(spec, ck["data"])
    graph = TaskGraph(spec)
    model = compile_model(spec, graph, vocab_sizes=dict(ck["vocab_sizes"]))
    try:
        model.load_state_dict(_whole(Path(path), ck, model))
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise CheckpointError(path, f"its weights do not fit the model of its own spec "
                                    f"({first[:120]})") from None
    model.to(device).eval()
    meta = {k: v for k, v in ck.items() if k not in ("state_dict", "spec_source", "encoders")}
    return Checkpoint(model, spec, graph, Encoders.from_dict(ck["encoders"]), meta)


def _whole(path: Path, ck: dict, model: nn.Module) -> dict:
    """The checkpoint's state dict with every table whole: joined from the native shards'
    files, or read from the TorchRec engine's folder (training/embeddings/torchrec_checkpoints.py)."""
    tables = ck.get("tables")
    if not tables:
        return ck["state_dict"]
    if tables.get("engine") == "torchrec":
        from .embeddings.torchrec_checkpoints import native_state

        return native_state(path.parent / tables["folder"], ck["state_dict"], model)
    from .embeddings.sharding import assembled

    return assembled(path, tables, ck["state_dict"])


UNREADABLE = "is not a checkpoint: torch cannot read it (not a torch file, or truncated)"
KEYS = ("state_dict", "spec_source", "spec_name", "spec_path", "overrides", "data",
        "encoders", "vocab_sizes", "seed")  # what loading reads


class CheckpointError(DataError):
    """A file that is not a checkpoint this version can load (E703, exit 1)."""

    def __init__(self, path: str | Path, why: str):
        super().__init__(f"{path}: {why}", code="E703",
                         hint=f"expected a run folder or the checkpoint.pt that `mtl compile "
                              f"--train` writes (format {FORMAT})")


def _read(path: Path, device: str | torch.device) -> dict:
    """The checkpoint's dict, safely: only tensors and plain containers are unpickled."""
    if not path.is_file():
        raise CheckpointError(path, "is not a file")
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a foreign file
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=device, weights_only=True,
                            mmap=zipfile.is_zipfile(path))  # big tables: read in place
    except pickle.UnpicklingError as err:
        raise CheckpointError(path, _refused(str(err))) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile,
            UnicodeDecodeError, AttributeError, TypeError, IndexError):
        raise CheckpointError(path, UNREADABLE) from None
    if not isinstance(ck, dict) or "format" not in ck:
        held = "a dict without a format" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise CheckpointError(path, f"is a torch file but not an mtl-dsl checkpoint (it holds "
                                    f"{held})")
    if ck["format"] != FORMAT:
        raise CheckpointError(path, f"has format {str(ck['format'])[:40]!r}, this mtl-dsl "
                                    f"reads {FORMAT!r}; retrain it with this version")
    missing = [k for k in KEYS if k not in ck]
    if missing:
        raise CheckpointError(path, f"is incomplete: it lacks '{missing[0]}'")
    return ck


def _refused(message: str) -> str:
    """Why torch's safe unpickler refused a file, without its advice to load it unsafely."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return (f"holds a Python object ({found.group(1)}), not only tensors and plain "
                "containers; mtl-dsl never loads such a file, since unpickling it can run code")
    return UNREADABLE


def _with_trained_data(spec: Spec, data: dict | None) -> Spec:
    """The spec with the data setting it was trained on (which a caller may have changed in
    Python, e.g. fewer synthetic rows, without an override)."""
    if data is None:
        return spec
    params = kinds("data")[data["kind"]].params.model_validate(data["params"])
    span = spec.data.span if spec.data is not None else None
    return spec.model_copy(update={"data": make_setting("data", data["kind"], params, span)})
