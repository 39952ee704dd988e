"""SIGINT and SIGTERM during training: finish the step, save a resumable state, exit 130/143.

:class:`Signals` installs the handlers while the training loop runs (in the main thread only;
elsewhere signals keep their handlers). A signal only sets `pending`; the loop looks at it at
the next step boundary, saves its state and raises :class:`Interrupted`. A second Ctrl-C
does not wait: it raises KeyboardInterrupt at once (the last saved state stays valid).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

CAUGHT = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Training stopped by a signal after saving its resumable state; `code` is the exit
    status a shell gives such a stop (128 + the signal's number)."""

    def __init__(self, signum: int, run_dir: Path, epoch: int, step: int):
        self.signum, self.run_dir, self.epoch, self.step = signum, run_dir, epoch, step
        self.code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped in epoch {epoch} after step {step}; "
                         f"resumable state in {run_dir / 'resume.pt'}")


class Signals:
    """A context in which SIGINT/SIGTERM set `pending` instead of stopping the process."""

    def __init__(self):
        self.pending: int | None = None
        self.old: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.pending is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: now
        self.pending = signum

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            for s in CAUGHT:
                self.old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)
        self.old.clear()
