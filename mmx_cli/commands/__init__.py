"""The `mmx` command line: one Typer module per command family, each only parsing, calling a workflow and printing."""
