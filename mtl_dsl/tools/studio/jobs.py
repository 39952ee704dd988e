"""Training started from the page: each run is `mtl compile SPEC --train` in its own process.

A job is the command itself (an argument list, never a shell), so the page trains exactly what
the command line trains and writes the same run folder; the studio reads the run's progress
from that folder (tools/studio/runs.py), the source `mtl runs` reads, never from the console
text. A new run's folder is the one whose `status.json` names the job's process id
(training/runs.py writes it at the start). Stop sends SIGINT, which the trainer turns into a
resumable save and exit 130; resume is `--resume RUN`. Several jobs run at once; the studio
stops those still running when it shuts down, the same way.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .files import Folder

OUTPUT_LINES = 200  # the console lines kept per job (shown when a run fails to start)
STOP_WAIT = 20.0  # seconds a job has at shutdown to save its state after SIGINT


@dataclass
class Job:
    """One `mtl compile --train` process and what is known of it."""

    id: int
    spec: Path
    command: list[str]
    process: subprocess.Popen
    started: float
    run: str | None = None
    output: deque = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))
    stopping: bool = False

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def describe(self) -> dict:
        code = self.returncode
        state = "running" if code is None else {0: "finished", 130: "interrupted",
                                                143: "interrupted"}.get(code, "failed")
        return {"id": self.id, "spec": self.spec.name, "run": self.run, "state": state,
                "returncode": code, "stopping": self.stopping, "output": list(self.output)}


class Jobs:
    """The studio's training processes."""

    def __init__(self, folder: Folder, python: str = sys.executable) -> None:
        self.folder, self.python = folder, python
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()

    def start(self, spec: Path, resume: str | None = None) -> Job:
        """Start `mtl compile SPEC --train` (with `--resume RUNS/NAME`) in the runs folder."""
        command = [self.python, "-m", "mtl_dsl", "compile", str(spec), "--train",
                   "--out", str(self.folder.runs), "--plots", "wait"]
        if resume is not None:
            command += ["--resume", str(self.folder.runs / resume)]
        self.folder.runs.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(command, cwd=self.folder.root, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace")
        with self._lock:
            job = Job(len(self._jobs) + 1, spec, command, process, time.time(), resume)
            self._jobs[job.id] = job
        threading.Thread(target=_read_output, args=(job,), daemon=True,
                         name=f"mtl-studio-job-{job.id}").start()
        return job

    def get(self, job_id: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.run is None:
            job.run = self._find_run(job)
        return job

    def all(self) -> list[Job]:
        return [self.get(i) for i in sorted(self._jobs)]

    def live(self) -> dict[str, int]:
        """Run folder name -> the id of the job still training it."""
        return {j.run: j.id for j in self.all() if j.run and j.returncode is None}

    def stop(self, job_id: int) -> bool:
        """SIGINT: the trainer saves its resumable state and exits 130 (docs/cli.md)."""
        job = self._jobs.get(job_id)
        if job is None or job.returncode is not None:
            return False
        job.stopping = True
        job.process.send_signal(signal.SIGINT)
        return True

    def close(self, wait: float = STOP_WAIT) -> None:
        """Stop every running job as the Stop button does; kill what has not exited."""
        running = [j for j in self._jobs.values() if j.returncode is None]
        for job in running:
            self.stop(job.id)
        deadline = time.monotonic() + wait
        for job in running:
            try:
                job.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()

    def _find_run(self, job: Job) -> str | None:
        """The folder whose status.json the job's process wrote (None until it has)."""
        runs = self.folder.runs
        if not runs.is_dir():
            return None
        for folder in runs.iterdir():
            try:
                if folder.stat().st_mtime < job.started - 1:
                    continue
                status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if status.get("pid") == job.process.pid:
                return folder.name
        return None


def _read_output(job: Job) -> None:
    """Keep the job's last console lines (a reader thread, until the process closes them)."""
    assert job.process.stdout is not None
    for line in job.process.stdout:
        job.output.append(line.rstrip("\n"))
    job.process.stdout.close()
    job.process.wait()
