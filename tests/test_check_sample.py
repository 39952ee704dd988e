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


HASHED = """model h
data csv("d.csv", split=[0.5, 0.5])
feature u = sparse(hash=4, dim=8)
feature big = sparse(hash=99999999, dim=16)
feature a = dense()
label y
label pos = y == "yes"
input x = concat(u, big, a)
tower t = mlp(x, 4)
task t1: binary(label=pos) from t
train memory=2
"""


def test_check_reports_each_tables_memory_and_the_hash_collisions_of_its_sample(tmp_path):
    """Each table with lazy Adam's state (3 x its weights) and where it goes under a 2 GB
    budget (row-wise: 1e8 x 16 is 19.2 GB with its state), the processes that needs, and
    each hashed table's collisions on the sampled rows: 6 values in 4 buckets."""
    (tmp_path / "d.csv").write_text("u,big,a,y\n" + "".join(
        f"v{i % 6},w{i},{i},{'yes' if i % 2 else 'no'}\n" for i in range(30)))
    (tmp_path / "s.mtl").write_text(HASHED)
    out = subprocess.run([*CLI, "check", "s.mtl"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "table big: 100,000,000 x 16, 19.20 GB with its optimizer state (6.40 GB " \
           "weights): row-wise over 10" in lines
    assert "table u: 5 x 8, 0.0 MB with its optimizer state (0.0 MB weights): replicated" \
           in lines
    assert "tables over the memory budget of 2.00 GB a process: they need at least 10 " \
           "processes" in lines
    hashed = next(line for line in lines if line.startswith("hash u: "))
    assert hashed.startswith("hash u: 6 values of the first 30 rows in 4 buckets; ")
