"""The `mtl` command line assembled: each command module registers its commands on the app
when imported, so the import order below is the order `mtl --help` lists them in, the order
of the workflow: write and check a spec, draw it, train it, search and compare, then use
the trained runs."""

from __future__ import annotations

import sys

from . import spec_commands  # noqa: F401 - check, render, compile
from . import experiment_commands  # noqa: F401 - tune, compare, runs
from . import serving_commands  # noqa: F401 - predict, eval, export
from . import editor_commands  # noqa: F401 - fmt, lsp
from .app import app


def main() -> None:
    """Run the app; click's own usage errors keep their exit code (2)."""
    try:
        app(standalone_mode=True)
    except SystemExit as e:
        sys.exit(e.code)


from . import studio_commands  # noqa: E402,F401 - studio: the live page (docs/studio.md)
