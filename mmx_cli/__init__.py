"""mmx: long-context evaluation of language models, built around the MiniMax-01 architecture.

The Python API mirrors the command line (each name loads only when first used, so `import mmx` stays light):

    import mmx
    run = mmx.evaluate(model="mmx-mini", suite="ruler", tasks=["niah_single_1", "vt"], lengths="4k,8k", samples=5)
    run.scores()                      # task × length mean scores, as `mmx eval` prints them
    mmx.load_run("runs/ruler-...").to_frame()   # one row per sample of any run directory
    backend = mmx.load_backend("hf:/models/my-model")   # any model spec; mmx.tasks builds and scores prompts
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate": "mmx.workflows.evaluate.api",
    "load_run": "mmx.results.run_results",
    "RunResults": "mmx.results.run_results",
    "load_backend": "mmx.model.backends.base",
}
__all__ = ["RunResults", "__version__", "evaluate", "load_backend", "load_run", "tasks"]


def __getattr__(name: str) -> Any:
    """Load an API name (or the `tasks` package) on first use."""
    if name == "tasks":
        return importlib.import_module("mmx.tasks")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmx' has no attribute {name!r}")
