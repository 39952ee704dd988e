"""`mtl lsp` without its extra: exit 1 and a one-line hint, no traceback (docs/editors.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def test_without_pygls_the_command_says_how_to_install_it(tmp_path):
    fake = tmp_path / "pygls"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pygls'\", name='pygls')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "mtl_dsl", "lsp"], cwd=ROOT, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: `mtl lsp` needs pygls: pip install 'mtl-dsl[lsp]'"]
    assert "Traceback" not in done.stderr and done.stdout == ""
