"""The `mtl` command's entry point; the commands themselves live in mtl_dsl.tools.commands."""

from mtl_dsl.tools.entry import run as main

if __name__ == "__main__":
    main()
