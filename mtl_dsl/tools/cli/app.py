"""The `mtl` command's shared parts: the Typer app, exit codes, the guard that turns every
expected failure into a message and an exit code, and the options several commands share.

Each command module (`spec_commands`, `experiment_commands`, ...) registers its commands on
`app` through `command` (the docstring's paragraphs as the help); `main` imports them all, in
the order of the workflow. Keeping the app here lets a new command live in its own module
instead of growing one file.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import traceback
from enum import IntEnum
from pathlib import Path
from typing import Callable, Optional

import typer

from ...language.diagnostics import MtlError


class Exit(IntEnum):
    OK = 0
    SPEC_OR_DATA = 1
    USAGE_OR_IO = 2
    INTERNAL = 3
    BROKEN_PIPE = 141  # 128 + SIGPIPE, as git and coreutils exit when their reader closes


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mtl-dsl: multi-task learning models from a short spec.")

SpecArg = typer.Argument(..., help="the .mtl spec file", show_default=False)
DataOpt = typer.Option(None, "--data", help="train on this CSV/Parquet file instead")


def command(name: str | None = None) -> Callable[[Callable], Callable]:
    """Register a command on `app`, its help the docstring's paragraphs (`paragraphs`).

    Every command module registers through this, never `app.command` itself: Typer hands a
    docstring to click with its hard line breaks, and `mtl --help` then breaks a command's
    line where the source did, mid-sentence. tests/test_docs.py holds every command to it."""
    def register(function: Callable) -> Callable:
        return app.command(name=name, help=paragraphs(function.__doc__ or ""))(function)
    return register


def paragraphs(doc: str) -> str:
    """A docstring as help text: each paragraph's lines joined into one line (the terminal
    wraps it), paragraphs apart by a blank line."""
    blocks = re.split(r"\n\s*\n", inspect.cleandoc(doc))
    return "\n\n".join(" ".join(line.strip() for line in b.splitlines()) for b in blocks)


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _guard(run: Callable[[], int]) -> None:
    """Turn every expected failure into a message and an exit code. It leaves the garbage
    collector alone: its policy is the process's, set once in tools/cli/entry.py, and a
    caller in the same process (a test, a notebook) keeps its own."""
    raise typer.Exit(int(_outcome(run)))


def _outcome(run: Callable[[], int]) -> int:
    try:
        code = run()
    except MtlError as err:
        _err(err.render())
        code = Exit.SPEC_OR_DATA
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        _err(f"error: {err}")
        code = Exit.USAGE_OR_IO
    except KeyboardInterrupt:
        _err("interrupted")
        code = 130
    except BrokenPipeError:  # `mtl check spec | head -1`: the reader has gone, say nothing
        _silence_stdout()
        code = Exit.BROKEN_PIPE
    except Exception as err:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("MTL_DEBUG"):
            traceback.print_exc()
        _err(f"internal error: {type(err).__name__}: {err}\n"
             "  = help: this is a bug in mtl-dsl; rerun with MTL_DEBUG=1 for the traceback")
        code = Exit.INTERNAL
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again on the
    closed pipe (Python's documented recipe for SIGPIPE)."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stream)
        pass


def _checked(spec: Path, data: Optional[str], weighting: Optional[str] = None,
             max_params: float = 2e9):
    from ...api import check_file

    return check_file(spec, data, weighting, int(max_params))


RunOpt = typer.Option(..., "--checkpoint", help="a run folder (or its checkpoint.pt)")
FileOpt = typer.Option(..., "--data", help="a CSV/Parquet file, read with the spec's options")
ForceOpt = typer.Option(False, "--force", help="use the checkpoint even if SPEC describes "
                        "another model (the checkpoint's own model is used)")


def _json_metrics(metrics: dict | None) -> dict | None:
    """Metrics for JSON: one that cannot be computed is null (its reason is in the notes),
    never a NaN, which JSON does not have."""
    if metrics is None:
        return None
    return {t: {k: None if v != v else v for k, v in m.items()} for t, m in metrics.items()}
