"""Side tables joined to a source's files on key columns: `data csv("ratings.csv",
join=[csv("users.csv", on=user_id), csv("items.csv", on=item_id, how=left)])`.

Every file of the source (train, val, test, a file given to `mtl predict`/`mtl eval`, the
rows `mtl check` samples) is joined the same way, by pyarrow, keeping its row order (splits
and error row numbers are positions in the source's own file). A side table must hold each
key once, else rows would be duplicated silently. Rows without a match are counted: a
warning on stderr names how many (dropped by `how=inner`, kept with missing values by
`how=left`); when no row matches, that is an error (docs/data.md, "Joins").
"""

from __future__ import annotations

import sys

from ..language import registry as reg
from ..language.diagnostics import DataError
from ..language.ir import Setting

ROW = "__mtl_row"  # the position of each row of the source's file, to restore its order
HIT = "__mtl_hit"  # set on every side-table row, null after a left join where none matched


def side_setting(join: reg.JoinTable) -> Setting:
    """The side table as a source of its own (its kind and reading options)."""
    if join.kind == "parquet":
        return Setting(kind="parquet", params=reg.ParquetSource(path=join.path))
    options = join.model_dump(include=set(reg.CsvOptions.model_fields))
    return Setting(kind="csv", params=reg.CsvSource(path=join.path, **options))


def joined_columns(name: str, own: list[str],
                   sides: list[tuple[reg.JoinTable, list[str]]]) -> list[str]:
    """The columns after the joins: the file's, then each side table's non-key columns; a
    key missing on either side or a column two tables both hold is an error."""
    out = list(own)
    for join, cols in sides:
        for key in join.on:
            for table, present in ((name, out), (join.path, cols)):
                if key not in present:
                    raise DataError(f"join of {join.path}: key column '{key}' is not in "
                                    f"{table}", hint=f"{table} has: {_few(present)}")
        clash = [c for c in cols if c in out and c not in join.on]
        if clash:
            raise DataError(f"join of {join.path}: column '{clash[0]}' is in {join.path} and "
                            f"in the columns before it", hint="join tables share only the "
                            "on= keys; rename the column in one of the files")
        out += [c for c in cols if c not in join.on]
    return out


def own_columns(wanted: list[str] | None, own: list[str],
                sides: list[tuple[reg.JoinTable, Setting]]) -> list[str] | None:
    """What to read of the source's own file: the wanted columns it holds and every key."""
    if wanted is None:
        return None
    keys = [k for j, _ in sides for k in j.on]
    return list(dict.fromkeys(c for c in [*wanted, *keys] if c in own))


def side_wanted(wanted: list[str] | None, cols: list[str], join: reg.JoinTable
                ) -> list[str] | None:
    """What to read of a side table: its keys and the wanted columns it holds."""
    if wanted is None:
        return None
    return list(dict.fromkeys([*join.on, *(c for c in wanted if c in cols)]))


def join_tables(name: str, table, sides: list[tuple[reg.JoinTable, object]]):
    """`table` (pyarrow) joined with each side table in turn, in its own row order."""
    import pyarrow as pa

    table = table.append_column(ROW, pa.array(range(len(table)), pa.int64()))
    for join, side in sides:
        table = _join_one(name, table, join, side)
    return table.sort_by(ROW).drop_columns([ROW])


def _join_one(name: str, table, join: reg.JoinTable, side):
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = list(join.on)
    table, side = _same_key_types(table, side, keys)
    _unique_keys(join, side)
    side = side.append_column(HIT, pa.array([True] * len(side), pa.bool_()))
    out = table.join(side, keys, join_type="left outer", use_threads=False)
    missed = int(pc.sum(pc.is_null(out.column(HIT))).as_py() or 0) if len(out) else 0
    _report(name, join, missed, len(table))
    if join.how == "inner" and missed:
        out = out.filter(pc.is_valid(out.column(HIT)))
    return out.drop_columns([HIT])


def _same_key_types(table, side, keys: list[str]):
    """Keys read as different types (ids as numbers in one file, text in the other) are
    compared as text."""
    import pyarrow as pa

    for k in keys:
        a, b = table.schema.field(k).type, side.schema.field(k).type
        if a != b:
            table = table.set_column(table.schema.get_field_index(k), k,
                                     table.column(k).cast(pa.string()))
            side = side.set_column(side.schema.get_field_index(k), k,
                                   side.column(k).cast(pa.string()))
    return table, side


def _unique_keys(join: reg.JoinTable, side) -> None:
    """Each key once in a side table: a repeated key would repeat the source's rows."""
    counts = side.group_by(list(join.on)).aggregate([([], "count_all")])
    repeated = counts.filter(counts.column("count_all").to_numpy() > 1)
    if len(repeated):
        first = {k: repeated.column(k)[0].as_py() for k in join.on}
        shown = ", ".join(f"{k}={v!r}" for k, v in first.items())
        raise DataError(f"join of {join.path}: key {shown} appears "
                        f"{repeated.column('count_all')[0].as_py()} times ({len(repeated)} "
                        f"key(s) repeat)", hint="a side table holds each key once")


def _report(name: str, join: reg.JoinTable, missed: int, rows: int) -> None:
    """No match at all is an error; some rows without a match, a warning saying how many."""
    on = ", ".join(join.on)
    if rows and missed == rows:
        raise DataError(f"join of {join.path}: none of the {rows:,} rows of {name} has a "
                        f"match on {on}", hint="check that the key columns hold the same "
                        "ids in both files (and the same type: 7 vs \"007\")")
    if missed:
        fate = "dropped (how=inner)" if join.how == "inner" else \
            "kept with missing values (how=left)"
        print(f"warning: join of {join.path}: {missed:,} of {rows:,} rows of {name} have no "
              f"match on {on}; {fate}", file=sys.stderr)


def _few(columns: list[str]) -> str:
    return ", ".join(columns[:8]) + (f", ... ({len(columns)} in all)" if len(columns) > 8 else "")
