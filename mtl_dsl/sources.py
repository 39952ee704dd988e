"""Data sources: the built-in synthetic generators, and CSV/Parquet files read by pyarrow.

A source yields a *frame*: a dict of equal-length 1-D numpy columns. Knowing a
source's column names without loading it (:func:`source_columns`) lets
`mtl check` report a missing label column at the spec line that names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import registry as reg
from .diagnostics import DataError, Span
from .ir import Setting

Frame = dict[str, np.ndarray]
_NOWHERE = Span(1, 1, 1, 1)


# --------------------------------------------------------------------------
# The MMoE paper's synthetic benchmark (ARCHITECTURES.md section 4)
# --------------------------------------------------------------------------

def correlated(p: reg.SyntheticCorrelated) -> Frame:
    """Two tasks whose correlation is set by `p.correlation`.

    `u1, u2` orthogonal unit vectors; `w1 = c u1`, `w2 = c (p u1 + sqrt(1-p^2) u2)`;
    `y_j = w_j.x + sum_i sin(alpha_i w_j.x + beta_i) + eps_j`, eps ~ N(0, noise) (noise is the
    variance); alpha, beta ~ N(0, 1) are redrawn with each seed and shared by both tasks.
    """
    rng = np.random.default_rng(p.seed)
    q, _ = np.linalg.qr(rng.standard_normal((p.dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = p.c * u1
    w2 = p.c * (p.correlation * u1 + np.sqrt(max(0.0, 1 - p.correlation ** 2)) * u2)
    alpha, beta = rng.standard_normal(p.m), rng.standard_normal(p.m)
    x = rng.standard_normal((p.rows, p.dim))
    frame: Frame = {f"x_{i}": x[:, i].astype(np.float32) for i in range(p.dim)}
    for j, w in ((1, w1), (2, w2)):
        s = x @ w  # (N,)
        y = s + np.sin(np.outer(s, alpha) + beta).sum(axis=1)
        y = y + rng.normal(0.0, np.sqrt(p.noise), size=p.rows)
        frame[f"y{j}"] = _target(y, p).astype(np.float32)
    return frame


def _target(y: np.ndarray, p: reg.SyntheticCorrelated) -> np.ndarray:
    """The regression target, or its binarised (above median) / quantile-binned variant."""
    if p.target == "binary":
        return (y > np.median(y)).astype(np.float32)
    if p.target == "multiclass":
        edges = np.quantile(y, np.linspace(0, 1, p.classes + 1)[1:-1])
        return np.digitize(y, edges).astype(np.float32)
    return y


def synthetic_columns(kind: str, p: reg.Params) -> list[str]:
    if kind == "synthetic.correlated":
        return [f"x_{i}" for i in range(p.dim)] + ["y1", "y2"]
    raise KeyError(kind)


SYNTHETIC = {"synthetic.correlated": correlated}


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def resolve_path(path: str, base_dir: Path) -> Path:
    """Paths in a spec are relative to the spec file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _file_kind(setting: Setting, path: Path) -> str:
    if setting.kind in ("csv", "parquet"):
        return setting.kind
    return "parquet" if path.is_dir() or path.suffix == ".parquet" else "csv"


def _csv_options(p: reg.CsvSource):
    from pyarrow import csv

    read = csv.ReadOptions(column_names=list(p.columns) if p.columns else None,
                           autogenerate_column_names=not p.header and not p.columns)
    parse = csv.ParseOptions(delimiter=p.sep)
    convert = csv.ConvertOptions(null_values=list(p.na), strings_can_be_null=True,
                                 quoted_strings_can_be_null=True)
    return read, parse, convert


def _open(setting: Setting, base_dir: Path) -> Path:
    path = resolve_path(setting.params.path, base_dir)
    if not path.exists():
        raise DataError(f"data file not found: {setting.params.path} (looked in {path.parent})",
                        hint="paths in a spec are relative to the spec file; "
                             "use --data to point at another file")
    return path


def read_table(setting: Setting, base_dir: Path):
    """Read a CSV (optionally gzip) or Parquet file/folder into a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import csv

    path = _open(setting, base_dir)
    try:
        if _file_kind(setting, path) == "parquet":
            return pq.read_table(path)
        return csv.read_csv(path, *_csv_options(setting.params))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def file_columns(setting: Setting, base_dir: Path) -> list[str]:
    """Column names of a file source, reading only its header / schema."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyarrow import csv

    path = _open(setting, base_dir)
    try:
        if _file_kind(setting, path) == "parquet":
            return list(ds.dataset(path, format="parquet").schema.names)
        with csv.open_csv(path, *_csv_options(setting.params)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def source_columns(setting: Setting, base_dir: Path) -> list[str]:
    if setting.kind in SYNTHETIC:
        return synthetic_columns(setting.kind, setting.params)
    return file_columns(setting, base_dir)


def load_frame(setting: Setting, base_dir: Path, columns: list[str] | None = None) -> Frame:
    """The whole source as numpy columns (only `columns` when given)."""
    if setting.kind in SYNTHETIC:
        frame = SYNTHETIC[setting.kind](setting.params)
        return {c: frame[c] for c in columns} if columns else frame
    table = read_table(setting, base_dir)
    names = columns or table.column_names
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in names}


def override(setting: Setting | None, path: str) -> Setting:
    """`--data PATH`: replace the spec's source by a file, keeping CSV options if it had any."""
    kind = "parquet" if path.endswith(".parquet") or Path(path).is_dir() else "csv"
    if setting is not None and setting.kind == kind == "csv":
        params = setting.params.model_copy(update={"path": str(Path(path).resolve())})
    elif kind == "csv":
        params = reg.CsvSource(path=str(Path(path).resolve()))
    else:
        params = reg.ParquetSource(path=str(Path(path).resolve()))
    span = setting.span if setting is not None else None
    return Setting(kind=kind, params=params, span=span or _NOWHERE)

