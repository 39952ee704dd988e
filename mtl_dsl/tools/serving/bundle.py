"""Serving an exported model: raw rows -> the model's inputs from the JSON bundle alone.

`BundleEncoder` turns a frame (column -> numpy array) into the ONNX model's inputs, reading
nothing but the bundle (docs/export.md, schema tools/serving/bundle.schema.json). It encodes
through data/encoding.py, the very functions the training data path uses (`Encoders.encode`),
from the vocabularies and scalers the bundle stores as a checkpoint does: there is no second
implementation to keep equal. Nothing here imports torch: `mtl predict --model FILE.onnx`
runs without it. A value that cannot be encoded is a DataError, as in training (exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...data.encoding import Scaler, Vocab, encode_dense, encode_sequence
from ...data.values import check_columns

SCHEMA = Path(__file__).with_name("bundle.schema.json")
BUNDLE_SUFFIX = ".bundle.json"


def bundle_path(onnx_file: str | Path) -> Path:
    """Where the serving bundle of an ONNX file lies: `model.onnx` -> `model.bundle.json`."""
    onnx_file = Path(onnx_file)
    return onnx_file.with_name(onnx_file.stem + BUNDLE_SUFFIX)


class BundleEncoder:
    """The encoders of a bundle, applied to frames."""

    def __init__(self, bundle: dict):
        self.bundle = bundle
        self.vocabs = {name: Vocab.from_dict(v) for name, v in bundle["vocabs"].items()}
        self.scalers = {name: Scaler.from_dict(s) for name, s in bundle["scalers"].items()}

    @classmethod
    def load(cls, path: str | Path) -> "BundleEncoder":
        return cls(json.loads(Path(path).read_text()))

    @property
    def columns(self) -> list[str]:
        return [c for f in self.bundle["features"] for c in f["columns"]]

    def encode(self, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Input name -> array, for every input of the model."""
        check_columns({c: f"feature '{f['name']}'" for f in self.bundle["features"]
                       for c in f["columns"]}, frame.keys())
        return {f["name"]: self._feature(f, frame) for f in self.bundle["features"]}

    def _feature(self, f: dict, frame: dict[str, np.ndarray]) -> np.ndarray:
        """One feature's inputs, by its kind (the bundle's `features` entry)."""
        if f["kind"] == "dense":
            return encode_dense(frame, f["columns"], f["name"], self.scalers[f["name"]])
        column = f["columns"][0]
        vocab = self.vocabs[f["table"]]
        if f["kind"] == "sequence":
            return encode_sequence(frame[column], vocab, f["sep"], f["max_len"], column)
        return vocab.encode(frame[column], column)


def onnx_predictions(model: str | Path, frame: dict[str, np.ndarray],
                     batch: int = 65536) -> dict[str, np.ndarray]:
    """Output column -> values through onnxruntime and the bundle beside the model."""
    import onnxruntime as ort

    bundle = json.loads(bundle_path(model).read_text())
    inputs = BundleEncoder(bundle).encode(frame)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [o["name"] for o in bundle["outputs"]]
    n = len(next(iter(frame.values()))) if frame else 0
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, n, batch):
        feed = {k: v[start:start + batch] for k, v in inputs.items()}
        for j, y in enumerate(session.run(names, feed)):
            chunks[j].append(y)
    return columns_of(bundle["outputs"], chunks)


def columns_of(outputs: list[dict], chunks: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Each output's chunks joined, a multiclass output split into one column per class."""
    out: dict[str, np.ndarray] = {}
    for o, parts in zip(outputs, chunks):
        y = np.concatenate(parts) if parts else np.zeros((0, *o["shape"][1:]), np.float32)
        if y.ndim == 2:
            out |= {c: y[:, i] for i, c in enumerate(o["columns"])}
        else:
            out[o["columns"][0]] = y
    return out


def write_columns(columns: dict[str, np.ndarray], out: str | Path) -> Path:
    """Predictions to a .csv or .parquet file (by its suffix), with pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    if out.suffix == ".parquet":
        pq.write_table(table, out)
    else:
        pacsv.write_csv(table, out)
    return out
