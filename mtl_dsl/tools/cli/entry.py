"""How an `mtl` process starts, before any command's modules load: the `mtl` script
(cli.py) and `python -m mtl_dsl` (the form torchrun launches) both start here.

This is the one place that sets the process's interpreter-wide state: the garbage
collector's policy and pydantic's plugins. Library code (`check_text`, the commands'
guard, training) leaves both alone, so a notebook or a long-running server that calls it
keeps its own (docs/cli.md).
"""

from __future__ import annotations

import atexit
import gc
import os


def run() -> None:
    """Run the `mtl` command line under the process's collector policy.

    The command line's modules load with the cyclic collector off: they allocate tens of
    thousands of objects, none of them garbage. They are then frozen out of every later
    collection and the collector runs, for every command alike (a training run makes
    garbage cycles). At exit what is alive is frozen too, so that the interpreter's last
    collection does not walk it (about 50 ms of `mtl check`); atexit runs this last, after
    the hooks of the libraries a command loaded (logging, trackers) have closed their files.
    The figures: docs/benchmarks.md, "`mtl check`".

    Pydantic's plugins, found by scanning every installed package's entry points, are off
    unless the environment names them: no command uses one.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    gc.disable()
    from .main import main

    gc.freeze()
    gc.enable()
    atexit.register(gc.freeze)
    main()
