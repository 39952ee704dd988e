"""`mtl studio`: a live local web page to write a spec, see its model and train it
(docs/studio.md). It needs the optional extra `mtl-dsl[studio]` (Starlette and uvicorn);
without it the command says how to install it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import Exit, _err, _guard, command

HINT = "error: `mtl studio` needs starlette and uvicorn: pip install 'mtl-dsl[studio]'"
NEEDED = ("starlette", "uvicorn", "anyio", "h11")


@command()
def studio(target: Path = typer.Argument(Path("."), help="a spec, or a folder of specs "
                                         "(default: the current folder)"),
           port: int = typer.Option(0, "--port", min=0, max=65535,
                                    help="the port on 127.0.0.1 (default: a free one)"),
           open_: bool = typer.Option(False, "--open", help="open the page in the browser"),
           runs: Optional[Path] = typer.Option(None, "--runs", help="the runs folder, inside "
                                               "the studio's folder (default: its runs/)")
           ) -> None:
    """Write a spec, see its model and train it on a live local web page.

    Serves a page on 127.0.0.1 and prints its URL, which holds the token every request needs;
    nothing outside the folder is read or written. Ctrl-C stops it."""

    def run() -> int:
        try:
            from ..studio.files import NotASpec, OutsideFolder
            from ..studio.server import CannotListen, serve
        except ImportError as err:
            if (err.name or "").split(".")[0] not in NEEDED:
                raise
            _err(HINT)
            return Exit.SPEC_OR_DATA
        try:
            return serve(target, port, open_, runs, typer.echo)
        except (NotASpec, OutsideFolder, CannotListen) as err:
            _err(f"error: {err}")
            return Exit.USAGE_OR_IO

    _guard(run)
