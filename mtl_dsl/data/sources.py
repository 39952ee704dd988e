"""Data sources: CSV/Parquet files read by pyarrow, and the synthetic generators
(:mod:`mtl_dsl.data.synthetic`).

A source yields a *frame*: a dict of equal-length 1-D numpy columns. Knowing a
source's column names without loading it (:func:`source_columns`) lets
`mtl check` report a missing label column at the spec line that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..language import registry as reg
from ..language.diagnostics import ROWS_HINT, DataError
from ..language.ir import Setting
from . import joins

if TYPE_CHECKING:  # numpy is imported where values are read: `mtl check` names columns only
    import numpy as np

    from .values import Frame


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def resolve_path(path: str, base_dir: Path) -> Path:
    """Paths in a spec are relative to the spec file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def file_parts(setting: Setting) -> dict[str, str]:
    """`{"all": path}` for one file (split later), else the named `train`/`val`/`test` files."""
    p = setting.params
    if p.path is not None:
        return {"all": p.path}
    named = {"train": p.train, "val": p.val, "test": p.test}
    return {k: v for k, v in named.items() if v is not None}


def _file_kind(setting: Setting, path: Path) -> str:
    if setting.kind in ("csv", "parquet"):
        return setting.kind
    return "parquet" if path.is_dir() or path.suffix == ".parquet" else "csv"


def _na(p: reg.CsvOptions) -> list[str]:
    """NA tokens, also as written after a ', ' separator (numeric columns are not stripped)."""
    tokens = list(p.na)
    return tokens + [f" {t}" for t in p.na if t] if p.strip else tokens


def _csv_options(p: reg.CsvOptions, columns: list[str] | None = None):
    from pyarrow import csv

    read = csv.ReadOptions(column_names=list(p.columns) if p.columns else None,
                           autogenerate_column_names=not p.header and not p.columns,
                           skip_rows=p.skip_rows + (1 if p.header and p.columns else 0),
                           encoding=p.encoding)
    parse = csv.ParseOptions(delimiter=p.sep)
    convert = csv.ConvertOptions(null_values=_na(p), strings_can_be_null=True,
                                 quoted_strings_can_be_null=True,
                                 include_columns=list(columns) if columns else None)
    return read, parse, convert


def _open(path_text: str, base_dir: Path) -> Path:
    path = resolve_path(path_text, base_dir)
    if not path.exists():
        raise DataError(f"data file not found: {path_text} (looked in {path.parent})",
                        hint="paths in a spec are relative to the spec file; "
                             "use --data to point at another file")
    return path


def _clean(table, p: reg.CsvOptions):
    """Text columns with surrounding spaces trimmed and NA tokens (after trimming) as nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not p.strip:
        return table
    na = pa.array(list(p.na), pa.string())
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            col = pc.utf8_trim_whitespace(table.column(i))
            col = pc.if_else(pc.is_in(col, value_set=na), pa.scalar(None, col.type), col)
            table = table.set_column(i, field.name, col)
    return table


def read_file(setting: Setting, base_dir: Path, path_text: str,
              columns: list[str] | None = None, rows: int | None = None):
    """One CSV (optionally gzip) or Parquet file/folder as a pyarrow Table (only `columns`;
    only about the first `rows` rows when given, read without reading the rest), with the
    source's `join=` side tables joined to it (mtl_dsl/data/joins.py)."""
    import pyarrow as pa

    if not isinstance(setting.params, reg.FileSource) or not setting.params.join:
        return _read_one(setting, base_dir, path_text, columns, rows)
    path = _open(path_text, base_dir)
    try:
        own = _columns_of(setting, path)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise unreadable(setting, path, err) from None
    sides = [(j, joins.side_setting(j)) for j in setting.params.join]
    side_cols = [file_columns(s, base_dir) for _, s in sides]
    joins.joined_columns(path_text, own, [(j, c) for (j, _), c in zip(sides, side_cols)])
    wanted = list(columns) if columns else None
    table = _read_one(setting, base_dir, path_text, joins.own_columns(wanted, own, sides), rows)
    tables = [(j, _read_one(s, base_dir, j.path, joins.side_wanted(wanted, c, j)))
              for (j, s), c in zip(sides, side_cols)]
    table = joins.join_tables(path_text, table, tables)
    return table.select(wanted) if wanted else table


def _read_one(setting: Setting, base_dir: Path, path_text: str,
              columns: list[str] | None = None, rows: int | None = None):
    """One file as read_file reads it, without joins."""
    import pyarrow as pa
    from pyarrow import csv

    path = _open(path_text, base_dir)
    cols = list(columns) if columns else None
    try:
        if _file_kind(setting, path) == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=cols) if rows is None else \
                _parquet_head(path, cols, rows)
        _check_width(setting.params, path)
        options = _csv_options(setting.params, columns)
        source = _csv_input(setting.params, path)
        table = csv.read_csv(source, *options) if rows is None else \
            _csv_head(source, options, rows)
        _check_text(table, setting.params, path)
        return _clean(table, setting.params)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError, UnicodeDecodeError) as err:
        raise unreadable(setting, path, err) from None


def _check_text(table, p: reg.CsvOptions, path: Path) -> None:
    """pyarrow reads text that is not valid in the file's encoding as raw bytes, silently:
    that is the wrong `encoding=`, said here rather than seen as odd categories later."""
    import pyarrow as pa

    for field in table.schema:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise DataError(f"{path.name}: column '{field.name}' holds text that is not valid "
                            f"{p.encoding}", hint='give the file\'s encoding, e.g. '
                            'encoding="latin-1" (MovieLens-100K) or encoding="cp1252"')


def _csv_input(p: reg.CsvOptions, path: Path):
    """The path, or with `comment=` the file's bytes without its comment lines (pyarrow's
    reader has no comment option; the lines are dropped in bulk, not parsed in Python)."""
    import pyarrow as pa

    if p.comment is None:
        return path
    with pa.input_stream(str(path), compression="detect") as f:
        text = f.read()
    mark = p.comment.encode(p.encoding)
    kept = [line for line in text.split(b"\n") if not line.lstrip().startswith(mark)]
    return pa.BufferReader(b"\n".join(kept))


def _csv_head(path, options, rows: int):
    """The first blocks of a CSV file holding at least `rows` rows (or all of it)."""
    import pyarrow as pa
    from pyarrow import csv

    batches = []
    with csv.open_csv(path, *options) as reader:
        for batch in reader:
            batches.append(batch)
            if sum(len(b) for b in batches) >= rows:
                break
        return pa.Table.from_batches(batches, schema=reader.schema)


def _parquet_head(path: Path, columns: list[str] | None, rows: int):
    """The first `rows` rows (all, if fewer). A single file is read through its own reader,
    batch by batch: pyarrow.dataset, needed for a folder, takes about 30 ms to import."""
    import pyarrow as pa

    if path.is_dir():
        import pyarrow.dataset as pads

        return pads.dataset(path, format="parquet").head(rows, columns=columns)
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        batches, n = [], 0
        for batch in f.iter_batches(batch_size=max(rows, 1), columns=columns):
            batches.append(batch)
            n += batch.num_rows
            if n >= rows:
                break
        table = pa.Table.from_batches(batches) if batches else f.schema_arrow.empty_table()
    return (table.select(columns) if columns else table).slice(0, rows)


FIELD_CHARS = 40  # the most of a file's text a message quotes


def quote_field(value) -> str:
    """A value for a message, cut to FIELD_CHARS: a message never echoes a file's line."""
    text = str(value)
    return repr(text if len(text) <= FIELD_CHARS else text[:FIELD_CHARS] + "...")


def unreadable(setting: Setting, path: Path, err: Exception) -> DataError:
    """Why a file cannot be read, without quoting its lines: a ragged CSV row is named by
    its row number; other parser messages are cut before any echoed text."""
    if setting.kind != "parquet" and "columns, got" in str(err) and path.is_file():
        found = _ragged_row(setting.params, path)
        if found is not None:
            row, got, expected = found
            before = "the header has" if row == 1 and setting.params.header else \
                "the rows before it have"
            return DataError(f"cannot read {path}: row {row} has {got} field(s), but "
                             f"{before} {expected}",
                             hint=f"sep={setting.params.sep!r}; junk lines before the header: "
                                  f"skip_rows=N; comment lines: comment=\"#\"; {ROWS_HINT}")
    return DataError(f"cannot read {path}: {_reason(err)}")


def _reason(err: Exception) -> str:
    """pyarrow's first line, cut before a quoted line (': <text>') and quoted fields cut."""
    import re

    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    text = re.sub(r"(Expected \d+ columns, got \d+): .*", r"\1", text)
    text = re.sub(r"'([^']*)'", lambda m: quote_field(m.group(1)), text)
    return text if len(text) <= 160 else text[:160] + "..."


def _ragged_row(p: reg.CsvOptions, path: Path) -> tuple[int, int, int] | None:
    """(data row, fields, expected fields) of the first row with the wrong number of
    fields, read again on one thread (pyarrow numbers rows only then)."""
    import pyarrow as pa
    from pyarrow import csv

    read, parse, _ = _csv_options(p)
    read.use_threads = False
    seen: list[tuple[int, int, int]] = []

    def handler(row) -> str:
        if row.number is not None:
            data_row = row.number - p.skip_rows - (1 if p.header else 0)
            seen.append((data_row, row.actual_columns, row.expected_columns))
        return "error"

    parse.invalid_row_handler = handler
    try:
        csv.read_csv(_csv_input(p, path), read, parse)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError):
        pass
    return seen[0] if seen else None


def read_table(setting: Setting, base_dir: Path):
    """The source's one file (or its training file) as a pyarrow Table."""
    return read_file(setting, base_dir, next(iter(file_parts(setting).values())))


def _check_width(p: reg.CsvOptions, path: Path) -> None:
    """`columns=` must name every column of the file, else pyarrow's message is cryptic."""
    if not p.columns:
        return
    width = csv_width(p, path)
    if width != len(p.columns):
        raise DataError(f"{path.name} has {width} columns per row, but columns= names "
                        f"{len(p.columns)}", hint=f"name all {width} columns, in file order")


def csv_width(p: reg.CsvOptions, path: Path) -> int:
    """How many fields the first row of a CSV file has (its first block only)."""
    from pyarrow import csv

    read = csv.ReadOptions(autogenerate_column_names=True, block_size=1 << 16,
                           skip_rows=p.skip_rows, encoding=p.encoding)
    with csv.open_csv(_csv_input(p, path), read, csv.ParseOptions(delimiter=p.sep)) as reader:
        return len(reader.schema.names)


def _columns_of(setting: Setting, path: Path) -> list[str]:
    from pyarrow import csv

    if _file_kind(setting, path) == "parquet":
        if path.is_file():  # the footer only; pyarrow.dataset is slow to import
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        import pyarrow.dataset as pads

        return list(pads.dataset(path, format="parquet").schema.names)
    _check_width(setting.params, path)
    read, parse, _ = _csv_options(setting.params)
    with csv.open_csv(_csv_input(setting.params, path), read, parse) as reader:
        return list(reader.schema.names)


def file_columns(setting: Setting, base_dir: Path) -> list[str]:
    """Column names of a file source, reading only headers / schemas; every named file
    (train, val, test) must exist and have the training file's columns."""
    import pyarrow as pa

    found: dict[str, list[str]] = {}
    for part, text in file_parts(setting).items():
        path = _open(text, base_dir)
        try:
            found[part] = _columns_of(setting, path)
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
            raise unreadable(setting, path, err) from None
    first, columns = next(iter(found.items()))
    for part, cols in found.items():
        missing = [c for c in columns if c not in cols]
        if missing:
            raise DataError(f"the {part} file lacks column '{missing[0]}' of the {first} file"
                            + (f" ({len(missing)} missing)" if len(missing) > 1 else ""),
                            hint="train, val and test files need the same columns")
    return columns


def source_columns(setting: Setting, base_dir: Path) -> list[str]:
    """The columns a source yields: its file's, and those its `join=` tables add."""
    if isinstance(setting.params, reg.SyntheticSource):
        return list(setting.params.columns())
    own = file_columns(setting, base_dir)
    sides = [(j, file_columns(joins.side_setting(j), base_dir)) for j in setting.params.join]
    first = next(iter(file_parts(setting).values()))
    return joins.joined_columns(first, own, sides) if sides else own


def table_frame(table, names: list[str] | None = None) -> Frame:
    """A pyarrow Table (or RecordBatch) as numpy columns; text as object arrays, nulls None."""
    out: Frame = {}
    for c in names or table.column_names:
        col = table.column(c)
        out[c] = _numpy(col)
    return out


def _numpy(col) -> np.ndarray:
    import numpy as np
    import pyarrow as pa

    if pa.types.is_integer(col.type) and col.null_count:
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return np.array(col.to_pylist() + [None], dtype=object)[:-1]
    return col.to_numpy(zero_copy_only=False)


def load_parts(setting: Setting, base_dir: Path, columns: list[str] | None = None
               ) -> dict[str, Frame]:
    """`{"all": frame}` for one source, or `{"train": ..., "val": ..., "test": ...}`."""
    if isinstance(setting.params, reg.SyntheticSource):
        from .synthetic import SYNTHETIC

        frame = SYNTHETIC[setting.kind](setting.params)
        return {"all": {c: frame[c] for c in columns} if columns else frame}
    return {part: table_frame(read_file(setting, base_dir, text, columns), columns)
            for part, text in file_parts(setting).items()}
