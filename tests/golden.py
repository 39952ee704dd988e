"""Render the diagnostics of a golden bad spec, and (re)write its .expected file.

`python tests/golden.py` rewrites every tests/bad/*.expected; review the diff before
committing it: the goldens are the contract for our error messages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mtl_dsl.language.diagnostics import MtlError, render_all  # noqa: E402
from mtl_dsl.api import check_file  # noqa: E402


def diagnostics_text(spec: Path) -> str:
    """What `mtl check` prints for a spec, with machine-specific folders replaced."""
    cwd = os.getcwd()
    os.chdir(spec.parent)  # messages show the path as given, relative to here
    try:
        try:
            checked = check_file(spec.name)
            text = render_all(checked.diagnostics, checked.source)
        except MtlError as err:
            text = err.render()
    finally:
        os.chdir(cwd)
    return text.replace(str(spec.parent), "<DIR>") + "\n"


if __name__ == "__main__":
    for path in sorted((HERE / "bad").glob("*.mtl")):
        path.with_suffix(".expected").write_text(diagnostics_text(path))
        print("wrote", path.with_suffix(".expected").name)
