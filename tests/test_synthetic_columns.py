"""A generator's declared columns (`columns()` of its parameter model) are what it yields,
and `mtl check` trusts them instead of drawing rows only where a draw could find nothing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from mtl_dsl.api import check_text
from mtl_dsl.data import sample
from mtl_dsl.data.synthetic import SYNTHETIC
from mtl_dsl.language import registry as reg
from mtl_dsl.language.diagnostics import DataError

SOURCES = {
    "synthetic.correlated(rows=400, dim=3, seed=2)":
        reg.SyntheticCorrelated(rows=400, dim=3, seed=2),
    "synthetic.correlated(rows=400, dim=3, seed=2, target=binary)":
        reg.SyntheticCorrelated(rows=400, dim=3, seed=2, target="binary"),
    "synthetic.correlated(rows=400, dim=3, seed=2, target=multiclass, classes=3)":
        reg.SyntheticCorrelated(rows=400, dim=3, seed=2, target="multiclass", classes=3),
    "synthetic.funnel(rows=400, seed=2, dense=3, history=3, users=30, items=20)":
        reg.SyntheticFunnel(rows=400, seed=2, dense=3, history=3, users=30, items=20),
}
KIND = {"synthetic.correlated": reg.SyntheticCorrelated, "synthetic.funnel": reg.SyntheticFunnel}


def _holds(values: reg.Values, col: np.ndarray) -> bool:
    if values.kind == "text":
        return col.dtype == object and all(isinstance(v, str) for v in col)
    if col.dtype.kind not in "biuf" or not np.isfinite(col).all():
        return False
    whole = bool((col == np.round(col)).all())
    if values.kind == "binary":
        return set(np.unique(col)) <= {0, 1}
    if values.kind == "ids":
        return whole and bool((col >= 0).all())
    if values.kind == "classes":
        return whole and bool(((col >= 0) & (col < values.classes)).all())
    return values.kind == "real"


@pytest.mark.parametrize("call", SOURCES)
def test_each_generator_yields_exactly_its_declared_columns(call):
    params = SOURCES[call]
    kind = call.split("(")[0]
    frame = SYNTHETIC[kind](params)
    declared = params.columns()
    assert list(frame) == list(declared)
    bad = [name for name, values in declared.items() if not _holds(values, frame[name])]
    assert bad == []


def test_the_declaration_is_checked_for_each_kind_of_value():
    """The check above can fail: a column against a declaration it does not meet."""
    reals = np.array([-1.5, 0.25], dtype=np.float32)
    assert _holds(reg.REAL, reals) and not _holds(reg.BINARY, reals)
    assert not _holds(reg.IDS, np.array([3, -1])) and _holds(reg.IDS, np.array([3, 0]))
    assert not _holds(reg.Values("classes", 3), np.array([0.0, 3.0]))
    assert not _holds(reg.TEXT, np.array([1.0]))


def _spec(source: str, columns: dict[str, reg.Values], use: str, column: str) -> str:
    """A small spec over `source` using `column` one way: as the label of a task of some kind,
    as a `where=`, or as a dense feature under some norm."""
    real = [c for c, v in columns.items() if v.kind == "real" and c != column]
    head = ["model m", f"data {source}", f"feature f = dense(column={real[0]})"]
    if use.startswith("dense"):
        norm = use.split(":")[1]
        target = real[1]
        return "\n".join([*head, f"feature g = dense(column={column}, norm={norm})",
                          f"label {target}", "input x = concat(f, g)", "tower t = mlp(x, 4)",
                          f"task a: regression(label={target}) from t", ""])
    if use == "where":
        target = real[1]
        return "\n".join([*head, f"label {target}, {column}", "tower t = mlp(f, 4)",
                          f"task a: regression(label={target}, where={column}) from t", ""])
    kind, _, classes = use.partition(":")
    extra = f", classes={classes}" if classes else ""
    return "\n".join([*head, f"label {column}", "tower t = mlp(f, 4)",
                      f"task a: {kind}(label={column}{extra}) from t", ""])


USES = ["regression", "binary", "multiclass:2", "multiclass:3", "multiclass:8", "where",
        "dense:standard", "dense:log"]


def _drawn(spec) -> list:
    """What `mtl check` says after a draw (the path a declaration lets it skip)."""
    found = []
    for name, (frame, _) in sample.sample_frames(spec).items():
        try:
            sample._check(spec, frame)
        except DataError as err:
            found.append(err.diagnostics[0].message)
    return found


def test_check_skips_the_draw_only_where_the_draw_finds_nothing():
    """Every (source, column, use) a spec can state: where the declaration vouches for the
    data, a draw (training's own checks) finds no error; and it vouches often enough to
    matter, and declines where the draw does find one."""
    vouched = declined_with_error = 0
    for source, params in SOURCES.items():
        columns = params.columns()
        for column in columns:
            for use in USES:
                checked = check_text(_spec(source, columns, use, column))
                if not checked.ok:  # e.g. a text column as a regression label: E-codes
                    continue
                spec = checked.spec
                if sample._fits_without_draw(spec):
                    vouched += 1
                    assert _drawn(spec) == [], (source, column, use)
                elif _drawn(spec):
                    declined_with_error += 1
    assert vouched >= 40 and declined_with_error >= 20, (vouched, declined_with_error)


def test_derived_labels_and_files_are_always_drawn_or_read(tmp_path):
    esmm = check_text((ROOT / "specs" / "esmm.mtl").read_text(), path=str(ROOT / "specs" /
                                                                         "esmm.mtl")).spec
    assert esmm.derived_labels and not sample._fits_without_draw(esmm)
    census = check_text((ROOT / "specs" / "census_mmoe.mtl").read_text(),
                        path=str(ROOT / "specs" / "census_mmoe.mtl")).spec
    assert not sample._fits_without_draw(census)


def test_a_label_its_generator_cannot_give_is_still_found_by_mtl_check(tmp_path):
    text = (ROOT / "specs" / "mmoe.mtl").read_text()
    text = text.replace("task a: regression(label=y1)", "task a: binary(label=y1)")
    text = text.replace("monitor=a.mse", "monitor=a.auc")
    (tmp_path / "s.mtl").write_text(text)
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", "s.mtl"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1
    assert "generated data: column 'y1' (label of binary task 'a') must be 0 or 1" in out.stderr


@pytest.mark.parametrize("spec, drawn", [("mmoe.mtl", False), ("esmm.mtl", True)])
def test_mtl_check_imports_numpy_only_to_draw(spec, drawn):
    code = ("import sys\nsys.argv = ['mtl', 'check', 'specs/%s']\n"
            "from mtl_dsl.tools.cli.entry import run\n"
            "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('numpy' in sys.modules, 'torch' in sys.modules)\n" % spec)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == f"{drawn} False"


def test_the_check_benchmark_times_the_command_and_its_references():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_check.py"), "--specs",
                          "specs/mmoe.mtl", "--repeats", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {line.split("  ")[0]: line.split() for line in out.stdout.splitlines()[2:]}
    assert set(rows) == {"python -c pass", "libraries' imports", "mtl check specs/mmoe.mtl"}
    assert float(rows["mtl check specs/mmoe.mtl"][-4]) > 0  # the median, in seconds
