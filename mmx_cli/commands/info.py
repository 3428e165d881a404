"""`mmx info`: versions, devices, and which lightning-attention path runs where."""

from __future__ import annotations

import platform

import typer
from rich.console import Console
from rich.table import Table

from mmx.commands.app import app
from mmx.workflows.provenance import device_report, package_versions


@app.command()
def info(json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Show versions, devices, and which kernel path will run where."""
    versions = package_versions()
    devices = device_report()
    if json_output:
        import json

        print(json.dumps({"python": platform.python_version(), "versions": versions, "devices": devices}, indent=2))
        return
    console = Console()
    table = Table(title="packages")
    table.add_column("package")
    table.add_column("version")
    table.add_row("python", platform.python_version())
    for name, version in versions.items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    console.print(table)
    dev = Table(title="devices")
    for col in ("device", "name", "memory", "lightning"):
        dev.add_column(col)
    for row in devices:
        dev.add_row(*row.values())
    console.print(dev)
