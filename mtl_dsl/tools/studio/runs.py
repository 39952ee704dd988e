"""The runs folder as the page shows it: the table `mtl runs` prints, a run's records, and a
run's progress as server-sent events.

Everything is read from the run folders themselves (training/runs.py): `status.json` and
`metrics.jsonl`, whose start, step, epoch, test and end records the trainer writes a line at a
time (docs/cli.md, "mtl compile"). A stream follows a run's metrics.jsonl as `tail -f` does,
only whole lines, and its status file; it ends once the run has stopped and every record has
been sent. Each record's event id is the byte offset after it, so a reconnecting EventSource
(its Last-Event-ID) goes on where it stopped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator, Callable

from ...training.runs import json_safe, read_status
from ..experiments.run_table import list_runs
from .guard import OutsideFolder

POLL = 0.2  # seconds between looks at a run folder being written
KEEPALIVE = 15.0  # seconds between comments on a quiet stream
FILES = ("losses.png", "experts.png", "spec.mtl")  # what the page may fetch from a run


def run_dir(runs: Path, name: str) -> Path:
    """The run folder `name` directly under `runs` (OutsideFolder for anything else)."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise OutsideFolder(f"not a run folder's name: {name!r}")
    path = (runs / name).resolve()
    if path.parent != runs.resolve() or not path.is_dir():
        raise OutsideFolder(f"no run folder {name!r} in {runs}")
    return path


def table(runs: Path, live: dict[str, int]) -> list[dict]:
    """`mtl runs`'s rows (tools/experiments/run_table.py), with the id of the job training
    each run from this studio, if any."""
    if not runs.is_dir():
        return []
    return [json_safe({**row, "job": live.get(row["name"])}) for row in list_runs(runs)]


def read_records(folder: Path, offset: int = 0) -> tuple[list[tuple[int, dict]], int]:
    """The records of metrics.jsonl after byte `offset`, each with the offset after it, and
    the offset after the last whole line (a line still being written waits)."""
    try:
        with (folder / "metrics.jsonl").open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    out = []
    end = data.rfind(b"\n") + 1
    position = offset
    for line in data[:end].splitlines(keepends=True):
        position += len(line)
        try:
            out.append((position, json.loads(line)))
        except ValueError:
            continue  # not a record: skipped, as `mtl runs` skips it
    return out, offset + end


def records(folder: Path) -> list[dict]:
    return [json_safe(r) for _, r in read_records(folder)[0]]


def event(kind: str, data: object, id_: int | None = None) -> str:
    """One server-sent event."""
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(json_safe(data))}\n\n"


async def follow(folder: Path, offset: int, running: Callable[[], bool],
                 stopping: asyncio.Event) -> AsyncIterator[str]:
    """A run's records and status as events, until the run has stopped (`running()` says
    whether a process of this studio still trains it) and its last record is sent."""
    status, quiet = None, 0.0
    while not stopping.is_set():
        found, offset = read_records(folder, offset)
        for position, record in found:
            yield event("record", record, position)
        now = read_status(folder)
        if now != status:
            status = now
            yield event("status", status or {})
        if not found and not running() and (status or {}).get("status") != "running":
            found, offset = read_records(folder, offset)  # what was written meanwhile
            for position, record in found:
                yield event("record", record, position)
            yield event("end", {"status": (status or {}).get("status")})
            return
        quiet = 0.0 if found else quiet + POLL
        if quiet >= KEEPALIVE:
            quiet = 0.0
            yield ": keepalive\n\n"
        await _sleep(POLL, stopping)


async def _sleep(seconds: float, stopping: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except asyncio.TimeoutError:
        pass
