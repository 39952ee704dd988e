"""The `mtl` command line: the process entry, the Typer app and its commands, grouped by
the stage of the workflow they serve (docs/cli.md)."""
