"""Serving an exported model: raw rows -> the model's inputs from the JSON bundle alone.

`BundleEncoder` turns a frame (column -> numpy array) into the ONNX model's inputs with
numpy only, reading nothing but the bundle (docs/export.md, schema
tools/serving/bundle.schema.json): it is the reference a service in any language follows.
The rules are the data stage's (`Encoders.encode`, docs/data.md), restated here
because a served model must not need this package; tests check both give the same
arrays. Nothing here imports torch: `mtl predict --model FILE.onnx` runs without it.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

SCHEMA = Path(__file__).with_name("bundle.schema.json")
BUNDLE_SUFFIX = ".bundle.json"


def bundle_path(onnx_file: str | Path) -> Path:
    """Where the serving bundle of an ONNX file lies: `model.onnx` -> `model.bundle.json`."""
    onnx_file = Path(onnx_file)
    return onnx_file.with_name(onnx_file.stem + BUNDLE_SUFFIX)


class ServingError(ValueError):
    """Raw rows the bundle cannot encode (a missing column, a bad value)."""


def _canon(v) -> str:
    """A category's key: 7, 7.0 and '7' are one category."""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _missing(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and v != v)


def _absent(col: np.ndarray) -> np.ndarray:
    """Missing cells: NaN, or None in an object column."""
    if col.dtype.kind == "f":
        return np.isnan(col)
    if col.dtype.kind == "O":
        return np.fromiter((_missing(v) for v in col), bool, len(col))
    return np.zeros(len(col), bool)


class BundleEncoder:
    """The encoders of a bundle, applied to frames."""

    def __init__(self, bundle: dict):
        self.bundle = bundle
        self.index = {name: {k: i + 1 for i, k in enumerate(v["keys"])}
                      for name, v in bundle["vocabs"].items()}

    @classmethod
    def load(cls, path: str | Path) -> "BundleEncoder":
        return cls(json.loads(Path(path).read_text()))

    @property
    def columns(self) -> list[str]:
        return [c for f in self.bundle["features"] for c in f["columns"]]

    def encode(self, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Input name -> array, for every input of the model."""
        for c in self.columns:
            if c not in frame:
                raise ServingError(f"column '{c}' is not in the data; the model reads it")
        return {f["name"]: self._feature(f, frame) for f in self.bundle["features"]}

    def _feature(self, f: dict, frame: dict[str, np.ndarray]) -> np.ndarray:
        if f["kind"] == "dense":
            return self._dense(f, frame)
        col = frame[f["columns"][0]]
        if f["kind"] == "sequence":
            return self._sequence(f, col)
        return self._ids(f["table"], col, f["columns"][0])

    def _ids(self, table: str, col: np.ndarray, column: str) -> np.ndarray:
        """Ids of a column's values (missing -> 0), each distinct value keyed once: `auto`
        looks the key up (unknown -> 0), `hash` takes 1 + crc32(key) mod (size - 1),
        `fixed` checks the id is in range."""
        vocab = self.bundle["vocabs"][table]
        ids = np.zeros(len(col), np.int64)
        present = ~_absent(col)
        if present.any():
            values = col[present]
            try:
                uniq, inverse = np.unique(values, return_inverse=True)
            except TypeError:  # numbers and text mixed in one object column
                uniq, inverse = np.unique(np.array([_canon(v) for v in values], dtype=str),
                                          return_inverse=True)
            found = [self._id(vocab, table, _canon(v), column) for v in uniq.tolist()]
            ids[present] = np.asarray(found, np.int64)[inverse.reshape(-1)]
        return ids

    def _id(self, vocab: dict, table: str, key: str, column: str) -> int:
        if vocab["kind"] == "hash":
            return 1 + zlib.crc32(key.encode()) % (vocab["size"] - 1)
        if vocab["kind"] == "auto":
            return self.index[table].get(key, 0)
        try:
            i = int(float(key))
        except ValueError:
            i = -1
        if not 0 <= i < vocab["size"] or str(i) != key:
            raise ServingError(f"column '{column}' holds ids in [0, {vocab['size']}); "
                               f"it has {key!r}")
        return i

    def _sequence(self, f: dict, col: np.ndarray) -> np.ndarray:
        """The last `max_len` ids of each list, left-aligned, -1 after them."""
        out = np.full((len(col), f["max_len"]), -1, np.int64)
        for r, v in enumerate(col.tolist()):
            if _missing(v):
                continue
            if isinstance(v, str):
                items = [t.strip() for t in v.split(f["sep"]) if t.strip()]
            elif np.ndim(v) == 0:
                items = [v]
            else:
                items = list(v)
            items = items[len(items) - f["max_len"]:] if len(items) > f["max_len"] else items
            ids = self._ids(f["table"], np.array(items, dtype=object), f["columns"][0])
            out[r, :len(ids)] = ids
        return out

    def _dense(self, f: dict, frame: dict[str, np.ndarray]) -> np.ndarray:
        """(x - shift) / scale per column, after log1p for norm=log and the fill of a
        missing value (missing=error: a missing value is an error)."""
        s = self.bundle["scalers"][f["name"]]
        parts = []
        for j, c in enumerate(f["columns"]):
            col = frame[c]
            try:
                x = col.astype(np.float64) if col.dtype.kind in "biuf" else \
                    np.asarray([np.nan if _missing(v) else v for v in col.tolist()], np.float64)
            except (TypeError, ValueError):
                raise ServingError(f"column '{c}' (dense feature '{f['name']}') must be "
                                   "numeric") from None
            gap = np.isnan(x)
            if gap.any():
                if s["fill"] is None:
                    raise ServingError(f"column '{c}' (dense feature '{f['name']}') has "
                                       f"{int(gap.sum())} missing value(s)")
                x = np.where(gap, s["fill"][j], x)
            parts.append(x)
        x = np.stack(parts, 1) if parts else np.zeros((0, 0))
        if s["norm"] == "log":
            x = np.log1p(x)
        return ((x - np.asarray(s["shift"])) / np.asarray(s["scale"])).astype(np.float32)


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
