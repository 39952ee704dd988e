"""`mtl runs [DIR]`: the run folders under DIR as a table, newest first.

Each row: the folder's name, its status (:func:`mtl_dsl.training.runs.read_status`: running,
finished, failed, interrupted, or killed when a "running" run's process is gone), epochs done
of those planned, the best epoch's validation metrics, the duration and the folder's size.
Folders from before status files say "unknown" unless their metrics.jsonl has an end record.
"""

from __future__ import annotations

import json
from pathlib import Path


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _end(folder: Path) -> dict | None:
    """The end record of metrics.jsonl, if the run got there."""
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return None
    return last if last.get("type") == "end" else None


def describe(folder: Path) -> dict | None:
    """One run folder as a row (None: not a run folder)."""
    from ...training.runs import read_status

    if not (folder / "metrics.jsonl").exists() and not (folder / "status.json").exists():
        return None
    status = read_status(folder) or {}
    end = _end(folder)
    state = status.get("status") or ("finished" if end else "unknown")
    best = status.get("best") or (end or {}).get("best") or {}
    return {"name": folder.name, "status": state, "error": status.get("error"),
            "epochs_done": status.get("epochs_done", (end or {}).get("epochs_run")),
            "epochs": status.get("epochs"), "best_epoch": status.get("best_epoch"),
            "best": best, "seconds": status.get("elapsed", (end or {}).get("elapsed")),
            "bytes": _size(folder), "modified": folder.stat().st_mtime}


def list_runs(root: Path) -> list[dict]:
    """Every run folder directly under `root` (or `root` itself), newest first."""
    folders = [root] if (root / "metrics.jsonl").exists() else \
        [p for p in root.iterdir() if p.is_dir()]
    rows = [r for r in map(describe, folders) if r is not None]
    return sorted(rows, key=lambda r: r["modified"], reverse=True)


def _metrics(best: dict) -> str:
    return "  ".join(f"{task}.{k}={v:.4g}" for task, values in best.items()
                     for k, v in values.items() if k != "loss" and isinstance(v, float))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red",
         "killed": "red", "unknown": "dim"}


def table(rows: list[dict], title: str):
    """The rows as a rich Table."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("run", "status", "epochs", "best", "duration", "size"):
        t.add_column(col, justify="right" if col in ("epochs", "duration", "size") else "left")
    for r in rows:
        done = "-" if r["epochs_done"] is None else str(r["epochs_done"])
        epochs = done if r["epochs"] is None else f"{done}/{r['epochs']}"
        best = _metrics(r["best"]) or "-"
        if r["best_epoch"] is not None and r["best"]:
            best = f"@{r['best_epoch']} {best}"
        status = f"[{STYLE.get(r['status'], '')}]{r['status']}[/]"
        t.add_row(r["name"], status, epochs, best, _duration(r["seconds"]), _bytes(r["bytes"]))
    return t
