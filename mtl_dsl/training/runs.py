"""A run folder: its name, its metrics.jsonl, and its `status.json`.

The status says running, finished, failed (with the error) or interrupted. It is written
atomically (:func:`atomic_json`; no torch here, so `mtl runs` starts quickly) when the run starts, at
every epoch end and when it stops, so a reader never sees half a file. A process killed by
SIGKILL cannot say so: its status stays "running" with a pid that is no longer alive, which
:func:`read_status` reports as "killed". A failed or interrupted run never says "finished".
"""

from __future__ import annotations

import json
import math
import os
import sys
import socket
import tempfile
from datetime import datetime
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what a plain open() would give the file


STATUS = "status.json"
STATES = ("running", "finished", "failed", "interrupted", "killed")


def replace_file(path: Path, write, mode: int | None = None) -> None:
    """Write through `write(file)` into a temporary file next to `path`, fsync, rename.
    `mode`: the file's permissions (a user's file keeps its own); by default what a plain
    open() would give a new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _MODE if mode is None else mode)  # not mkstemp's 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the folder is synced
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete what `replace_file` leaves when its process is killed (SIGKILL, a power cut)
    mid-write: a `.NAME.*.tmp` file, never renamed, while NAME itself is still the last
    complete version. Only for a folder no process is writing (a run being resumed)."""
    gone = []
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


def atomic_text(path: Path, text: str) -> None:
    replace_file(path, lambda f: f.write(text.encode("utf-8")))


def atomic_json(path: Path, obj: dict) -> None:
    atomic_text(path, json.dumps(obj, indent=1) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class Status:
    """The status file of one run folder; `update(**fields)` rewrites it whole."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / STATUS
        old = read_status(run_dir) or {}
        self.fields: dict = {"started": old.get("started", _now()), "resumes": 0}
        if old:
            self.fields["resumes"] = old.get("resumes", 0) + 1

    def update(self, **fields) -> None:
        self.fields |= fields
        self.fields |= {"pid": os.getpid(), "host": socket.gethostname(), "updated": _now()}
        atomic_json(self.path, self.fields)


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def read_status(run_dir: Path) -> dict | None:
    """The run's status, "running" turned into "killed" when its process is gone (same host);
    None when the folder has no status file."""
    path = Path(run_dir) / STATUS
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if status.get("status") == "running" and status.get("host") == socket.gethostname() \
            and not _alive(int(status.get("pid", 0))):
        status["status"] = "killed"
    return status


def run_folder(out_dir: str | Path, name: str) -> Path:
    """`out_dir/NAME-YYYYmmdd-HHMMSS`, with `-2`, `-3`... so no run is ever overwritten."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    for i in range(1, 10_000):
        path = out / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name under {out}")


def json_safe(x):
    """NaN/inf -> null, so every line of metrics.jsonl (and what is served from it) is strict
    JSON."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class Log:
    """metrics.jsonl; a resumed run keeps the records written before its saved state."""

    def __init__(self, path: Path, kept: tuple[list[dict], str] | None = None):
        if kept is not None:
            atomic_text(path, kept[1])
        self.file = path.open("a" if kept is not None else "w", buffering=1)
        self.records: list[dict] = list(kept[0]) if kept is not None else []

    def write(self, record: dict) -> None:
        self.records.append(record)
        self.file.write(json.dumps(json_safe(record)) + "\n")

    def close(self) -> None:
        self.file.close()


def progress(enabled: bool):
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=False)
