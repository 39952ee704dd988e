"""A new user's first day: two commands from a fresh clone, and every spec's data inside it.

The README's Quick start must stay exactly the two commands of .ci/quickstart, CI must run the
second, and no shipped spec, test, benchmark or doc may reach outside the repository for data
(a fresh clone has nothing beside it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / ".ci" / "quickstart"
OUTSIDE = "/".join(("..", "shared"))  # spelled in parts so that this file does not name it
DATA = re.compile(r'^data\s+(?:csv|parquet)\("([^"]+)"', flags=re.M)


def quick_start_block() -> list[str]:
    """The command lines of the first shell block under README's `## Quick start`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block, "README's Quick start has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_exactly_the_two_commands():
    commands = [line.split("#", 1)[0].strip() for line in quick_start_block()]
    assert commands == ["bash .ci/quickstart run", "bash .ci/quickstart test"]


def test_ci_runs_the_test_mode():
    lines = [line.split("#", 1)[0] for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(re.search(r"\bbash \.ci/quickstart test\b", line) for line in lines)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is what runs the script")
def test_quickstart_script_parses():
    out = subprocess.run(["bash", "-n", str(QUICKSTART)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "set -euo pipefail" in QUICKSTART.read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is what runs the script")
def test_quickstart_rejects_an_unknown_mode_before_setting_up(tmp_path):
    out = subprocess.run(["bash", str(QUICKSTART), "deploy"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "usage: bash .ci/quickstart run|test" in out.stderr


def test_constraints_pin_every_line_and_leave_torch_to_the_script():
    lines = [line.strip() for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s=]+", line) for line in lines)
    names = {line.split("==")[0].lower() for line in lines}
    assert "torch" not in names and "mtl-dsl" not in names
    assert {"lark", "pydantic", "networkx", "pytest", "torchjd"} <= names


SPECS = sorted((ROOT / "specs").glob("*.mtl"))


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_reads_data_inside_the_repository(spec):
    for relative in DATA.findall(spec.read_text(encoding="utf-8")):
        path = (spec.parent / relative).resolve()
        assert path.is_file(), f"{spec.name}: {relative} does not exist"
        assert path.is_relative_to(ROOT), f"{spec.name}: {relative} is outside the repository"


def test_the_shipped_data_sets_carry_their_source_and_licence():
    folders = [p for p in (ROOT / "specs" / "data").iterdir() if p.is_dir()]
    assert {p.name for p in folders} >= {"census-income-kdd", "ali-ccp-sample",
                                          "aliexpress-sample"}
    for folder in folders:
        source = (folder / "SOURCE.md").read_text(encoding="utf-8")
        assert re.search(r"Licen[cs]e", source), folder.name
    assert (ROOT / "specs/data/ali-ccp-sample/LICENSE").read_text().startswith("MIT License")
    assert "Apache License" in (ROOT / "specs/data/aliexpress-sample/LICENSE").read_text()
    assert "CC BY 4.0" in (ROOT / "specs/data/census-income-kdd/SOURCE.md").read_text()


def test_nothing_names_the_folder_outside_the_repository():
    named = [str(p.relative_to(ROOT)) for top in ("specs", "tests", "bench", "docs")
             for p in sorted((ROOT / top).rglob("*"))
             if p.is_file() and p.suffix in {".py", ".md", ".mtl", ".txt", ".expected", ".toml"}
             and OUTSIDE in p.read_text(encoding="utf-8", errors="replace")]
    assert not named, f"these name {OUTSIDE}: {named}"
