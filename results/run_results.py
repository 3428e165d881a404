"""A finished (or partial) run as Python objects: its `run.json`, its samples, and pandas views of both.

`mmx.load_run(DIR)` and `mmx.evaluate(...)` return a `RunResults`, so a notebook gets the same numbers as
`mmx report` without parsing files: `.to_frame()` has one row per sample, `.scores()` the task × length table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmx.results.aggregate import cell_scores
from mmx.results.store import RunStore

if TYPE_CHECKING:  # pandas loads only when a frame is asked for
    import pandas as pd

# Per-sample fields of samples.jsonl that become columns, in this order; nested `timings` are flattened.
FRAME_COLUMNS = (
    "task",
    "length",
    "index",
    "status",
    "score",
    "prediction",
    "references",
    "prompt_tokens",
    "prompt_hash",
    "batch_size",
    "build_s",
    "generate_s",
)


@dataclass
class RunResults:
    """One run directory: `meta` is its run.json, `records` its samples (one dict per line of samples.jsonl)."""

    dir: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def model_name(self) -> str:
        """The model's name as the run recorded it (its spec when it has no name)."""
        model = self.meta.get("model") or {}
        return str(model.get("name") or model.get("spec") or "")

    @property
    def suite(self) -> str:
        return str(self.meta.get("suite") or "")

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: the FRAME_COLUMNS, plus `model` and `suite` so frames of several runs concatenate."""
        import pandas as pd

        rows = []
        for record in self.records:
            timings = record.get("timings") or {}
            flat = {**record, "build_s": timings.get("build_s"), "generate_s": timings.get("generate_s")}
            rows.append({"model": self.model_name, "suite": self.suite, **{c: flat.get(c) for c in FRAME_COLUMNS}})
        frame = pd.DataFrame(rows, columns=["model", "suite", *FRAME_COLUMNS])
        return frame.sort_values(["length", "task", "index"], kind="stable", ignore_index=True)

    def scores(self) -> pd.DataFrame:
        """Mean score (0–100) per task (rows) and length (columns), as `mmx eval` prints it; NaN where nothing
        scored."""
        import pandas as pd

        cells = cell_scores(self.records)
        table = pd.DataFrame(
            [{"task": c.task, "length": c.length, "score": c.mean} for c in cells.values()],
            columns=["task", "length", "score"],
        )
        return table.pivot(index="task", columns="length", values="score")


def load_run(directory: str | Path) -> RunResults:
    """Read a run directory written by `mmx eval` (or `mmx.evaluate`); a directory that is not one is an MmxError."""
    store = RunStore(directory)
    return RunResults(dir=store.dir, meta=store.meta, records=store.samples())
