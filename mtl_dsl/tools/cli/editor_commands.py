"""The `mtl` commands of the editor: fmt (the canonical layout of a spec, docs/language.md
"Formatting")."""

from __future__ import annotations

import typer

from .app import _guard, command


@command()
def fmt(files: list[str] = typer.Argument(..., help="spec files or folders (every *.mtl "
                                          "below); - reads stdin and writes stdout",
                                          show_default=False),
        check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if a file "
                                   "would change"),
        diff: bool = typer.Option(False, "--diff", help="write nothing; print the changes as "
                                  "a unified diff")) -> None:
    """Lay out specs in the one canonical format (in place, atomically)."""

    def run() -> int:
        from ..editor.fmt import run_fmt

        return run_fmt(list(files), check=check, diff=diff)

    _guard(run, quick=True)
