"""The studio's folder: the specs it may open, read and save.

Only `.mtl` files under the folder are listed, read or written (`guard.inside` resolves every
path). A save goes through training/runs.py's `replace_file`, the project's one atomic write
(a temporary file beside the spec, fsynced, renamed over it), and keeps the file's mode, so
an editor, `mtl fmt` or a crash never sees half a spec.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ...training.runs import replace_file
from .guard import OutsideFolder, inside, relative_to_root

SUFFIX = ".mtl"
SKIPPED = {".git", ".venv", "venv", "node_modules", "__pycache__", "runs"}
MAX_LISTED = 500


class NotASpec(ValueError):
    """A path the studio does not edit (not a .mtl file, or missing)."""


@dataclass(frozen=True)
class Folder:
    """The folder the studio was started on; `runs` is where its training writes."""

    root: Path
    runs: Path

    def specs(self) -> list[str]:
        """The .mtl files under the folder ('/'-separated, sorted), skipping tool folders."""
        found: list[str] = []
        for base, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED and not d.startswith("."))
            found += [relative_to_root(self.root, Path(base) / f) for f in sorted(files)
                      if f.endswith(SUFFIX)]
            if len(found) >= MAX_LISTED:
                break
        return sorted(found[:MAX_LISTED])

    def spec_path(self, relative: str, exists: bool = True) -> Path:
        """The spec file a page path names (OutsideFolder, NotASpec)."""
        path = inside(self.root, relative)
        if path.suffix != SUFFIX:
            raise NotASpec(f"the studio edits .mtl files only, not {relative!r}")
        if exists and not path.is_file():
            raise NotASpec(f"no spec {relative!r} in the studio's folder")
        return path

    def read(self, relative: str) -> str:
        return self.spec_path(relative).read_text(encoding="utf-8")

    def save(self, relative: str, text: str) -> Path:
        """Write the spec atomically, keeping an existing file's permissions."""
        path = self.spec_path(relative, exists=False)
        if not path.parent.is_dir():
            raise NotASpec(f"no folder for {relative!r} in the studio's folder")
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
        replace_file(path, lambda f: f.write(text.encode("utf-8")), mode)
        return path


def open_folder(target: Path, runs: Path | None = None) -> tuple[Folder, str | None]:
    """The studio's folder and the spec to open first, from `mtl studio [SPEC or FOLDER]`:
    a spec opens in its own folder, a folder opens its first spec (None if it has none)."""
    target = target.resolve()
    if target.is_file():
        if target.suffix != SUFFIX:
            raise NotASpec(f"{target} is not a .mtl spec")
        root = target.parent
    elif target.is_dir():
        root = target
    else:
        raise FileNotFoundError(f"no such spec or folder: {target}")
    runs_dir = runs if runs is not None else Path("runs")
    runs_dir = (runs_dir if runs_dir.is_absolute() else root / runs_dir).resolve()
    if not runs_dir.is_relative_to(root):
        raise OutsideFolder(f"the runs folder {runs_dir} is not inside {root}")
    folder = Folder(root, runs_dir)
    first = relative_to_root(root, target) if target.is_file() else next(iter(folder.specs()),
                                                                           None)
    return folder, first
