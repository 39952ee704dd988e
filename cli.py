"""The `mtl` command's entry point; the commands themselves live in mtl_dsl.tools.commands."""

from mtl_dsl.tools.commands import main

if __name__ == "__main__":
    main()
