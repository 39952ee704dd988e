"""`python -m mtl_dsl ...` runs the `mtl` command (also the form torchrun launches)."""

from .tools.cli.entry import run

run()
