"""How an `mtl` process starts, before any command's modules load: the `mtl` script
(cli.py) and `python -m mtl_dsl` (the form torchrun launches) both start here."""

from __future__ import annotations

import gc
import os


def run() -> None:
    """Run the `mtl` command line.

    The cyclic garbage collector starts off: the modules a command loads (pydantic's models,
    the grammar, torch) allocate about a million objects, none of them garbage, and collecting
    over them was about a tenth of `mtl check`; `app._guard` decides what it is while the
    command runs. Pydantic's plugins, found by scanning every installed package's entry
    points, are off unless the environment names them: no command uses one.
    """
    gc.disable()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from .main import main

    main()
