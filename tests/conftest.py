"""Shared fixtures: paths of the repository, its specs and the golden bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.mtl"))
BAD = sorted((ROOT / "tests" / "bad").glob("*.mtl"))


@pytest.fixture
def root() -> Path:
    return ROOT
