"""mtl studio's editor bundle: the committed mtl_dsl/tools/studio/static/editor.js is exactly
what editors/studio-web/build.sh makes from its sources and pinned packages, and the wheel's
page is complete (docs/studio.md, "The editor bundle")."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

WEB = ROOT / "editors" / "studio-web"
BUNDLE = ROOT / "mtl_dsl" / "tools" / "studio" / "static" / "editor.js"


@pytest.mark.skipif(shutil.which("npx") is None or not (WEB / "node_modules" / "esbuild").is_dir(),
                    reason="node and the studio editor's packages are not installed "
                    "(`bash .ci/quickstart test` runs npm ci in editors/studio-web)")
def test_the_committed_bundle_is_the_build_of_its_sources(tmp_path):
    out = tmp_path / "editor.js"
    done = subprocess.run(["bash", str(WEB / "build.sh"), "--no-install", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == BUNDLE.read_bytes(), \
        "the bundle is stale: run `bash editors/studio-web/build.sh` and commit it"


def test_the_page_and_its_assets_ship_in_the_package():
    from mtl_dsl.tools.studio.page import ASSETS, asset

    page = asset("index.html").decode()
    for name in ASSETS:
        assert asset(name), name
        assert f"/static/{name}?token={{{{TOKEN}}}}" in page, name
    assert b"MtlEditor" in BUNDLE.read_bytes()[:200]
    assert asset("../routes.py") is None  # only the named assets
