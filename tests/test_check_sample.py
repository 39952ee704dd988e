"""`mtl check` samples the data it reads: the first rows of each file, checked as training
checks them, with training's messages, at the spec's data line."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

CLI = [sys.executable, str(ROOT / "cli.py")]
SPEC = """model m
data csv("d.csv", split=[0.5, 0.5])
feature a = dense()
feature b = dense()
label y
label pos = y == "yes"
input x = concat(a, b)
tower t = mlp(x, 4)
task t1: binary(label=pos) from t
"""


def check(folder, rows: str, *extra: str) -> subprocess.CompletedProcess:
    (folder / "d.csv").write_text("a,b,y\n" + rows)
    (folder / "s.mtl").write_text(SPEC)
    return subprocess.run([*CLI, "check", "s.mtl", *extra], cwd=folder, capture_output=True,
                          text=True)


def test_a_dense_column_that_is_not_numeric_is_an_error_at_the_data_line(tmp_path):
    out = check(tmp_path, "1,x,yes\n2,3,no\n")
    assert out.returncode == 1
    assert "s.mtl:2:1: error[E701]: d.csv: column 'b' (dense feature 'b') must be numeric; " \
           "row 1 has 'x'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_derived_label_matching_no_row_of_a_whole_file_is_an_error(tmp_path):
    out = check(tmp_path, "1,2,no\n2,3,NO\n")
    assert out.returncode == 1
    assert "label 'pos' matches no rows of the data" in out.stderr


def test_a_clean_file_passes_and_the_sample_can_be_skipped(tmp_path):
    assert check(tmp_path, "1,2,yes\n2,3,no\n").returncode == 0
    assert check(tmp_path, "1,x,yes\n2,3,no\n", "--no-sample").returncode == 0


def test_a_label_missing_only_from_the_sample_is_a_warning(tmp_path):
    from mtl_dsl.api import load
    from mtl_dsl.data.sample import check_sample

    # over one pyarrow block (1 MB): a 10-row sample reads the first block, not the last row
    rows = "".join(f"{i},{i},no\n" for i in range(200_000)) + "1,1,yes\n"
    (tmp_path / "d.csv").write_text("a,b,y\n" + rows)
    (tmp_path / "s.mtl").write_text(SPEC)
    spec = load(tmp_path / "s.mtl")
    found = check_sample(spec, rows=10)
    assert [(d.code, d.severity) for d in found] == [("W007", "warning")]
    assert "matches no rows" in found[0].message and "in its first" in found[0].message
    assert check_sample(spec, rows=300_000) == []  # the whole file: its last row matches


def test_sampling_does_not_import_torch():
    code = "import sys, mtl_dsl.data.sample; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
