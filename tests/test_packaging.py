"""The wheel: the grammar ships inside it, every package of the source tree is in it, it
installs no top-level module beside `mtl_dsl`, and a non-editable install into a fresh venv
works."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")


def _borrow_dependencies(env_dir: Path) -> None:
    """Let the child venv import this interpreter's installed packages (torch, lark, ...) without
    a network, whether this interpreter is a venv or a system Python: its site folders go on the
    child's path by a .pth file. (`system_site_packages=True` would borrow the *base* Python's
    packages, which inside a venv lack the dependencies.) The .pth files inside those folders are
    not processed, so an editable install of this checkout stays invisible to the child."""
    folders = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    child = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    (Path(child) / "borrowed.pth").write_text("\n".join(folders) + "\n")


def _isolation_flags() -> list[str]:
    """Build with this interpreter's setuptools (no index needed) when it meets pyproject's
    `setuptools>=68`; a venv of Python 3.12+ has none and an old one may be too old, so there
    pip builds in isolation, fetching setuptools from its index."""
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        return []
    return ["--no-build-isolation"] if major >= 68 else []


def _clean_copy(root: Path, into: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new ones not ignored), without a
    stale build/ folder that setuptools would reuse and put in the wheel."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        src = root / name
        if src.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / name)
    return into


def test_wheel_install_checks_a_spec(tmp_path: Path, root: Path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    _borrow_dependencies(env_dir)
    python = env_dir / "bin" / "python"
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *_isolation_flags(),
                    "-q", "-w", str(wheel_dir), str(_clean_copy(root, tmp_path / "src"))],
                   check=True, cwd=tmp_path)
    wheel = next(wheel_dir.glob("mtl_dsl-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "-q", str(wheel)], check=True, cwd=tmp_path)
    # run from a folder outside the checkout so nothing can be imported from the source tree
    spec = tmp_path / "mmoe.mtl"
    spec.write_text((root / "specs" / "mmoe.mtl").read_text())
    out = subprocess.run([str(env_dir / "bin" / "mtl"), "check", str(spec)], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok:" in out.stdout
    located = subprocess.run([str(python), "-c", "import mtl_dsl.grammar as g; print(g.__file__)"],
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in located and str(root) not in located
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"mtl_dsl"}, f"the wheel installs more than mtl_dsl: {sorted(top)}"
    assert "mtl_dsl/tools/serving/bundle.schema.json" in names


def test_pyproject_lists_every_package_of_the_source_tree(root: Path):
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "mtl_dsl").rglob(
        "__init__.py")}
    assert listed == found | {"mtl_dsl.grammar"}


def test_the_console_script_enters_the_package(root: Path):
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"mtl": "mtl_dsl.tools.cli.entry:run"}
