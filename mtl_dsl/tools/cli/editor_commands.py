"""The `mtl` commands of the editor: fmt (the canonical layout of a spec, docs/language.md
"Formatting") and lsp (the language server, docs/editors.md)."""

from __future__ import annotations

import typer

from .app import Exit, _err, _guard, command

LSP_HINT = "error: `mtl lsp` needs pygls: pip install 'mtl-dsl[lsp]'"


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


@command()
def lsp() -> None:
    """Run the language server on stdin and stdout (an editor starts it; docs/editors.md).

    Needs the optional extra: pip install 'mtl-dsl[lsp]'."""

    def run() -> int:
        try:
            from ..editor.lsp.server import serve
        except ImportError as err:  # the extra is not installed: say how, no traceback
            if (err.name or "").split(".")[0] not in ("pygls", "lsprotocol", "cattrs", "attrs"):
                raise
            _err(LSP_HINT)
            return Exit.SPEC_OR_DATA
        serve()
        return Exit.OK

    _guard(run)
