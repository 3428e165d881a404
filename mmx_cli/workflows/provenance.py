"""How a result was produced, recorded in every run's `run.json`: command, model, parameters, package versions,
hardware (with the lightning-attention path each device runs) and the git commit of the code."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the mmx checkout (suffixed `-dirty` with local changes); MMX_GIT_COMMIT for a copy of a checkout
    without its .git (`benchmarks/gpu_env.sh` sets it); None for an installed wheel."""
    if path is None and os.environ.get("MMX_GIT_COMMIT"):
        return os.environ["MMX_GIT_COMMIT"]
    where = path or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def hardware() -> dict[str, Any]:
    """The machine a run used: CPU, core count, memory, and each visible GPU with its lightning-attention path."""
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": memory_gb,
        "devices": device_report(),
    }


def run_metadata(
    kind: str, command: list[str], suite: str, model: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The `run.json` contents: what ran, on what, with which code (shared by every command that writes a run)."""
    return {
        "kind": kind,
        "command": command,
        "suite": suite,
        "model": dict(model),
        "params": dict(params),
        "versions": package_versions(),
        "hardware": hardware(),
        "git_commit": git_commit(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
