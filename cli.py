"""The `mtl` command for a source checkout (`python cli.py ...`); the installed `mtl` script
and `python -m mtl_dsl` enter at the same place, mtl_dsl/tools/cli/entry.py."""

from mtl_dsl.tools.cli.entry import run as main

if __name__ == "__main__":
    main()
