"""`mtl studio` as a command: the printed URL (the only place the token appears), Ctrl-C, and
the clear errors of a bad folder, a taken port and a missing extra (docs/studio.md)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

httpx = pytest.importorskip("httpx", reason="the studio's tests need httpx (the dev extra)")
pytest.importorskip("starlette", reason="mtl studio needs the extra mtl-dsl[studio]")

HINT = "error: `mtl studio` needs starlette and uvicorn: pip install 'mtl-dsl[studio]'"


def mtl(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtl_dsl", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, **kw)


def test_serves_prints_the_url_once_and_stops_on_ctrl_c(tmp_path):
    (tmp_path / "m.mtl").write_text((ROOT / "specs" / "mmoe.mtl").read_text())
    process = subprocess.Popen([sys.executable, "-m", "mtl_dsl", "studio", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    try:
        head = "".join(process.stdout.readline() for _ in range(3))
        url = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)", head)
        assert url, head
        port, token = url.groups()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(url.group(0), timeout=20).status_code == 200
        assert httpx.get(base + "/api/state", timeout=20).status_code == 403
        found = httpx.post(base + "/api/check", headers={"X-Mtl-Token": token}, timeout=20,
                           json={"path": "m.mtl", "text": (tmp_path / "m.mtl").read_text()})
        assert found.json()["ok"] is True
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode in (0, 130), err
    assert (head + out + err).count(token) == 1  # the printed URL, and nowhere else
    assert "Traceback" not in err


def test_a_bad_folder_or_runs_folder_is_a_clear_error(tmp_path):
    missing = mtl("studio", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such spec or folder" in missing.stderr
    (tmp_path / "notes.txt").write_text("x")
    wrong = mtl("studio", str(tmp_path / "notes.txt"))
    assert wrong.returncode == 2 and "is not a .mtl spec" in wrong.stderr
    outside = mtl("studio", str(tmp_path), "--runs", "/tmp")
    assert outside.returncode == 2 and "is not inside" in outside.stderr
    assert "Traceback" not in missing.stderr + wrong.stderr + outside.stderr


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        done = mtl("studio", str(tmp_path), "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot listen on 127.0.0.1:") and "Traceback" not in \
        done.stderr


def test_without_the_extra_it_says_how_to_install_it(tmp_path):
    """starlette absent (as without `pip install 'mtl-dsl[studio]'`): one line, exit 1."""
    code = ("import sys; sys.modules['starlette'] = None; sys.argv = ['mtl', 'studio', %r]; "
            "from mtl_dsl.tools.cli.entry import run; run()" % str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "MTL_DEBUG": ""})
    assert done.returncode == 1
    assert done.stderr == HINT + "\n"
