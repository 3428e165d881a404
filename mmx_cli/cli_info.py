"""`mmx info`: versions, devices, and which lightning-attention path runs where."""

from __future__ import annotations

import importlib.metadata
import platform

import typer
from rich.console import Console
from rich.table import Table

from mmx.app import app

_PACKAGES = ("mmx", "torch", "triton", "transformers", "safetensors", "tokenizers", "lm-eval", "flash-linear-attention")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour shows up in results (None when absent)."""
    found: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_report() -> list[dict[str, str]]:
    """One row per device torch can see, with the lightning-attention path `impl="auto"` picks there."""
    import torch

    from mmx.kernels.dispatch import auto_impl

    rows = [
        {
            "device": "cpu",
            "name": platform.processor() or platform.machine(),
            "memory": "-",
            "lightning": auto_impl(torch.device("cpu")),
        }
    ]
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        rows.append(
            {
                "device": f"cuda:{i}",
                "name": props.name,
                "memory": f"{props.total_memory / 2**30:.0f} GiB",
                "lightning": auto_impl(torch.device("cuda", i)),
            }
        )
    return rows


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
