"""Run directories: the default name of a new one, and the check that an output path can be written at all."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from mmx.errors import MmxError


def model_slug(spec: str) -> str:
    """A directory-safe name for a spec: `random:tiny` -> `random-tiny`, `mmx:/ckpt/run7/` -> `mmx-run7`."""
    prefix, sep, rest = spec.partition(":")
    name = f"{prefix}-{Path(rest.rstrip('/')).name or rest}" if sep else spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def default_out(kind: str, spec: str) -> Path:
    """`runs/<kind>-<model>-<timestamp>`: a fresh directory per run unless `--out` names one (to resume)."""
    return Path("runs") / f"{kind}-{model_slug(spec)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(out: Path) -> None:
    """Refuse an output path that cannot be created or written before the model is loaded (cheap, no side effects)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and (not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK)):
        raise MmxError(f"cannot write to {out}: {probe} is not a writable directory", "choose another --out directory")
