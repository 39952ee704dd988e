"""`mtl lsp`: the language server for editors, over stdio (docs/editors.md). It needs the
optional extra `mtl-dsl[lsp]` (pygls); without it the command says how to install it."""

from __future__ import annotations

from .app import Exit, _err, _guard, app

HINT = "error: `mtl lsp` needs pygls: pip install 'mtl-dsl[lsp]'"


@app.command()
def lsp() -> None:
    """Run the language server on stdin/stdout (started by the editor, not by hand)."""

    def run() -> int:
        try:
            from ..editor.lsp.server import serve
        except ImportError as err:
            if (err.name or "").split(".")[0] not in ("pygls", "lsprotocol", "cattrs", "attrs"):
                raise
            _err(HINT)
            return Exit.SPEC_OR_DATA
        serve()
        return Exit.OK

    _guard(run)
