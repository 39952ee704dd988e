"""Every shipped spec works end to end: `specs/**/*.mtl`, found by glob, so a new spec is
held to it without being listed here.

Each one is checked and drawn (SVG and Mermaid) through the `mtl` command, compiled,
trained one epoch on a slice of its data and exported to a standalone `.py` that predicts
what the checkpoint does. A search-space spec (docs/tuning.md) is drawn with its searched
values shown, still refused by `mtl compile` (E720), and its first value (the first
candidate of every dimension, substituted by language/space.py) is compiled, trained and
exported. ONNX and torch.export of every top-level spec are tests/test_export.py's, whose
`tiny_spec` slices the data here too (300 synthetic rows, 600 rows of a real file).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from test_export import tiny_spec
from mtl_dsl import api
from mtl_dsl.data.frames import load as load_data
from mtl_dsl.language.space import substitute
from mtl_dsl.tools.cli.main import app
from mtl_dsl.tools.drawing.searched import values_text
from mtl_dsl.tools.serving import artefacts
from mtl_dsl.tools.serving.export import export_run
from mtl_dsl.tools.serving.predict import predictions
from mtl_dsl.training.checkpoints import load_checkpoint

SHIPPED = sorted((ROOT / "specs").glob("**/*.mtl"))
IDS = [p.relative_to(ROOT / "specs").with_suffix("").as_posix() for p in SHIPPED]
SVG = "{http://www.w3.org/2000/svg}"


def mtl(*args: str) -> str:
    """`mtl ARGS` in this process; its output, once it exited 0."""
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, f"mtl {' '.join(args)}: exit {done.exit_code}\n{done.output}"
    return done.output


def svg_texts(path: Path) -> str:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def test_the_glob_finds_the_catalogue_and_the_search_space():
    assert len(SHIPPED) >= 27 and "tuning/census_mmoe_space" in IDS


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_a_shipped_spec_checks_and_draws(path, tmp_path):
    checked = api.check_file(path)
    said = mtl("check", str(path))
    assert said.startswith(f"ok: {path}")
    mtl("render", str(path), "-o", str(tmp_path / "d.svg"))
    mtl("render", str(path), "-o", str(tmp_path / "d.mmd"))
    texts, flowchart = svg_texts(tmp_path / "d.svg"), (tmp_path / "d.mmd").read_text()
    for task in checked.spec.tasks:
        assert task.name in texts.splitlines(), task.name
    nodes = re.findall(r"^    n\d+[\[(]", flowchart, re.M)
    assert flowchart.startswith(f"---\ntitle: {checked.spec.name}\n") and \
        len(nodes) == len(checked.graph.g.nodes)
    for d in checked.space.dims:  # a search space: every dimension's values are drawn
        assert values_text(d) in texts and values_text(d) in flowchart, d.name
    assert ("search space:" in said) == bool(checked.space)


def first_value(path: Path, folder: Path) -> Path:
    """The spec sliced (test_export.tiny_spec); a search space at its first candidates."""
    tiny = tiny_spec(path, folder)
    checked = api.check_file(tiny)
    if checked.space:
        assert CliRunner().invoke(app, ["compile", str(tiny)]).exit_code == 1  # E720
        tiny.write_text(substitute(tiny.read_text(), checked.space, checked.space.first()))
    return tiny


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_a_shipped_spec_compiles_trains_and_exports(path, tmp_path):
    spec = first_value(path, tmp_path)
    checked = api.check_file(spec).raise_for_errors()
    summary = json.loads(mtl("compile", str(spec), "--json"))
    assert summary["parameters"] > 0 and summary["blocks"]
    result = api.train_checked(checked, epochs=1, out_dir=tmp_path / "runs", progress=False,
                               plots=False)
    assert [r["epoch"] for r in result.history] == [0, 1]
    ck = load_checkpoint(result.checkpoint)
    assert sum(p.numel() for p in ck.model.parameters()) == summary["parameters"]
    code = export_run(ck, tmp_path / "model.py")
    rows = {k: v[:64] for k, v in load_data(ck.spec).items()}
    got, want = artefacts.frame_predictions(code, ck, rows), predictions(ck, rows)
    assert list(got) == list(want)
    for task in want:
        np.testing.assert_allclose(got[task], want[task], rtol=0, atol=1e-6, err_msg=task)


def test_the_installed_command_draws_pepnet(tmp_path):
    """Through the real entry (a process, as a user runs it): PEPNet's priors once ended
    `mtl render` in an internal error."""
    out = tmp_path / "pepnet.svg"
    done = subprocess.run([sys.executable, "-m", "mtl_dsl", "render",
                           str(ROOT / "specs" / "pepnet.mtl"), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "PPNet gates by prior" in svg_texts(out)
