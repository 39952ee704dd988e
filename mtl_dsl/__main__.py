"""`python -m mtl_dsl ...` runs the `mtl` command (also the form torchrun launches)."""

from .tools.commands import main

main()
