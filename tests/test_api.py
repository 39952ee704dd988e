"""The README's Python API, as written there."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def test_readme_api_loads_compiles_and_trains(tmp_path):
    import mtl_dsl as mtl
    import mtl_dsl.model.compiler  # noqa: F401  (importing the module must not hide the function)

    spec = mtl.load(ROOT / "specs" / "mmoe.mtl")
    model = mtl.compile(spec)
    assert isinstance(model, torch.nn.Module)
    out = model({"x": torch.randn(4, 100)})
    assert set(out) == {"a", "b"} and out["a"].shape == (4,)
    run = mtl.train(spec, epochs=1, out_dir=tmp_path, progress=False)
    assert run.run_dir.parent == tmp_path and set(run.best_metrics) == {"a", "b"}


def test_load_raises_with_every_error(tmp_path):
    import mtl_dsl as mtl

    bad = tmp_path / "bad.mtl"
    bad.write_text((ROOT / "tests" / "bad" / "bad_values.mtl").read_text())
    with pytest.raises(mtl.MtlError) as err:
        mtl.load(bad)
    assert len(err.value.diagnostics) == 3


def test_importing_the_package_does_not_import_torch():
    code = "import sys, mtl_dsl, mtl_dsl.language.check, mtl_dsl.tools.drawing.graphviz; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
