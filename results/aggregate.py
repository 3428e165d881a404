"""Aggregation of scored samples into cells (task × length) and the RULER summary figures built on them.

Scores on disk are fractions in [0, 1]; every figure here is on the 0–100 scale the tables show. Only samples with
status "ok" enter a mean: an OOM or an error is a missing measurement, not a zero, and is counted separately so a table
can say "OOM" instead of a misleading number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
OOM = "oom"
ERROR = "error"


@dataclass(frozen=True)
class CellScore:
    """One task at one length: `mean` (0–100) over the `n` samples that ran, and how many ended in each status."""

    task: str
    length: int
    mean: float | None
    n: int
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every sample recorded for the cell, whatever its status."""
        return sum(self.counts.values())

    @property
    def oom(self) -> bool:
        """True when the cell has no score and at least one sample ran out of memory."""
        return self.mean is None and self.counts.get(OOM, 0) > 0


def sample_status(record: Mapping[str, Any]) -> str:
    """The record's status; an "ok" record without a numeric score counts as an error, since it cannot be averaged."""
    status = str(record.get("status") or OK)
    if status == OK and not isinstance(record.get("score"), (int, float)):
        return ERROR
    return status


def cell_scores(samples: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], CellScore]:
    """Group sample records by (task, length) and average their scores × 100, sorted by task then length."""
    scores: dict[tuple[str, int], list[float]] = {}
    counts: dict[tuple[str, int], Counter[str]] = {}
    for record in samples:
        key = (str(record["task"]), int(record["length"]))
        status = sample_status(record)
        counts.setdefault(key, Counter())[status] += 1
        bucket = scores.setdefault(key, [])
        if status == OK:
            bucket.append(float(record["score"]))
    cells = {}
    for key in sorted(counts):
        ok = scores[key]
        mean = 100.0 * sum(ok) / len(ok) if ok else None
        cells[key] = CellScore(task=key[0], length=key[1], mean=mean, n=len(ok), counts=dict(counts[key]))
    return cells
