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
    for join, side in sides:
        table = _join_one(name, table, join, side)
    return table


def _join_one(name: str, table, join: reg.JoinTable, side):
    """A lookup, not a relational join: each row's key is found in the side table
    (`index_in`, a hash kernel) and the side columns are taken at that index, so the rows
    keep their order and a side table can add no rows."""
    import pyarrow.compute as pc

    same = all(table.schema.field(k).type == side.schema.field(k).type for k in join.on)
    left, right = _key(table, join.on, same), _key(side, join.on, same)
    _unique_keys(join, right)
    index = pc.index_in(left, value_set=right, skip_nulls=True)
    missed = index.null_count
    _report(name, join, missed, len(table))
    if join.how == "inner" and missed:
        found = pc.is_valid(index)
        table, index = table.filter(found), index.filter(found)
    taken = side.take(index)
    for column in (c for c in side.column_names if c not in join.on):
        table = table.append_column(column, taken.column(column))
    return table


def _key(table, on: tuple[str, ...], same: bool):
    """The key of each row as one array: the column itself when both tables read it as the
    same type, else as text (ids as numbers in one file, text in the other); several key
    columns joined by a separator no text field holds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(on) == 1 and same:
        return table.column(on[0]).combine_chunks()
    parts = [table.column(k).cast(pa.string()).combine_chunks() for k in on]
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")


def _unique_keys(join: reg.JoinTable, key) -> None:
    """Each key once in a side table: a repeated key would repeat the source's rows."""
    import pyarrow.compute as pc

    counts = pc.value_counts(key.drop_null())  # a missing key matches nothing
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        value = repeated.field("values")[0].as_py()
        shown = ", ".join(f"{k}={v!r}" for k, v in zip(join.on, str(value).split("\x1f"))) \
            if len(join.on) > 1 else f"{join.on[0]}={value!r}"
        raise DataError(f"join of {join.path}: key {shown} appears "
                        f"{repeated.field('counts')[0].as_py()} times ({len(repeated)} "
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
