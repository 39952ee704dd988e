"""bench/bench_scale.py run tiny: every part measures (the real command per table size and
embedding optimizer, the streamed funnel, the plain-PyTorch anchors) and prints the tables
docs/benchmarks.md shows; cases over the memory limit are skipped, not run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from conftest import ROOT

BENCH = ROOT / "bench" / "bench_scale.py"


def test_bench_scale_measures_every_part_tiny(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(BENCH), "--sizes", "2000", "--rows", "3000",
                           "--optimizers", "default,dense", "--stream-rows", "4000",
                           "--users", "300", "--items", "50", "--anchor-sizes", "2000",
                           "--anchor-steps", "6", "--work", str(tmp_path / "w"),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    for opt in ("default", "dense"):
        case = r["spec"][f"2000|{opt}|unset"]
        assert case["peak_mb"] > 100 and 0 < case["epoch"] < case["wall"]
        assert case["rows_per_s"] == 2400 / case["epoch"]  # 80% of 3,000 rows trained
    assert r["funnel"]["unset"]["rows_per_s"] > 0
    for name in ("dense_adam", "sparse_adam", "rowwise_adagrad", "lazy_adam"):
        assert r["anchors"][f"2000|{name}|unset"]["ms"] > 0, name
    tbe = r["anchors"]["2000|fbgemm_tbe|unset"]
    assert ("ms" in tbe) == (importlib.util.find_spec("fbgemm_gpu") is not None)
    assert "| 2e+03 | unset |" in done.stdout and "funnel (4,000 rows" in done.stdout
    assert not list((tmp_path / "w").glob("*/runs"))  # each run's folder removed


def test_a_case_over_the_limit_is_skipped(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(BENCH), "--sizes", "5e8", "--rows", "500",
                           "--optimizers", "dense", "--stream-rows", "0", "--anchor-sizes",
                           "5e8", "--limit-gb", "1", "--work", str(tmp_path / "w"),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    # 2 tables x 5e8 x 16 x 4 bytes x (weights, gradient, Adam's 2 moments)
    assert r["spec"]["500000000|dense|unset"] == {"skipped": "tables need 256.0 GB"}
    assert all("skipped" in v for v in r["anchors"].values())
