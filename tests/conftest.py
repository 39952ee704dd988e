"""Shared fixtures: paths of the repository, its specs and the golden bad specs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.mtl"))
BAD = sorted((ROOT / "tests" / "bad").glob("*.mtl"))


def wait_for_file(path: Path, seconds: float = 60.0) -> bool:
    """Whether `path` appears within `seconds`: what `mtl compile --train` leaves to its
    detached plot drawer (training/plots.py) is there a moment after the command returns."""
    deadline = time.monotonic() + seconds
    while not path.is_file():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def root() -> Path:
    return ROOT
