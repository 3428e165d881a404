"""Aggregation of scored samples into cells (task × length) and the RULER summary figures built on them.

Scores on disk are fractions in [0, 1]; every figure here is on the 0–100 scale the tables show. Only samples with
status "ok" enter a mean: an OOM or an error is a missing measurement, not a zero, and is counted separately so a table
can say "OOM" instead of a misleading number.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
OOM = "oom"
ERROR = "error"

# RULER's effective length: the longest length scoring above Llama-2-7B-chat's mean at 4k (85.6).
EFFECTIVE_THRESHOLD = 85.6


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


@dataclass(frozen=True)
class LengthMean:
    """The mean over tasks at one length, with how many of the expected tasks had a score there."""

    mean: float | None
    scored: int
    expected: int

    @property
    def complete(self) -> bool:
        """True when every expected task contributed, so the figure compares with a finished run's."""
        return self.mean is not None and self.scored == self.expected


def length_means(
    cells: Mapping[tuple[str, int], CellScore], tasks: Iterable[str] | None = None, lengths: Iterable[int] | None = None
) -> dict[int, LengthMean]:
    """The mean over `tasks` at each length (RULER's headline number), over the tasks that have a score there."""
    task_list = sorted({t for t, _ in cells}) if tasks is None else list(tasks)
    length_list = sorted({n for _, n in cells} if lengths is None else set(lengths))
    out = {}
    for length in length_list:
        scores = [c.mean for t in task_list if (c := cells.get((t, length))) is not None and c.mean is not None]
        mean = sum(scores) / len(scores) if scores else None
        out[length] = LengthMean(mean=mean, scored=len(scores), expected=len(task_list))
    return out


def average(means: Mapping[int, float]) -> float | None:
    """The plain mean over lengths (RULER's "Avg")."""
    return sum(means.values()) / len(means) if means else None


def weighted_average(means: Mapping[int, float], increasing: bool = True) -> float | None:
    """RULER's wAvg: lengths in ascending order get weights ∝ 1..n (inc) or n..1 (dec)."""
    ordered = [means[n] for n in sorted(means)]
    count = len(ordered)
    if not count:
        return None
    weights = range(1, count + 1) if increasing else range(count, 0, -1)
    return sum(w * v for w, v in zip(weights, ordered, strict=True)) / (count * (count + 1) / 2)


def effective_length(means: Mapping[int, float], threshold: float = EFFECTIVE_THRESHOLD) -> int | None:
    """The longest length whose mean exceeds `threshold` (strictly); None when no length does."""
    passing = [n for n, v in means.items() if v > threshold]
    return max(passing) if passing else None


def log2_slope(means: Mapping[int, float]) -> float | None:
    """Least-squares slope of score against log2(length): points gained (negative: lost) per doubling."""
    if len(means) < 2:
        return None
    xs = [math.log2(n) for n in means]
    ys = list(means.values())
    x_bar, y_bar = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - x_bar) * (y - y_bar) for x, y in zip(xs, ys, strict=True)) / sum((x - x_bar) ** 2 for x in xs)


def retention(means: Mapping[int, float]) -> float | None:
    """Mean at the longest length ÷ mean at the shortest: the fraction of short-context quality that survives."""
    if len(means) < 2:
        return None
    shortest, longest = means[min(means)], means[max(means)]
    return longest / shortest if shortest > 0 else None


@dataclass(frozen=True)
class Summary:
    """RULER's summary figures for one model over the lengths it has a mean for (all on the 0–100 scale)."""

    means: dict[int, float]
    avg: float | None
    wavg_inc: float | None
    wavg_dec: float | None
    effective_length: int | None
    retention: float | None
    slope: float | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values; length keys become strings."""
        return {
            "means": {str(n): v for n, v in self.means.items()},
            "avg": self.avg,
            "wavg_inc": self.wavg_inc,
            "wavg_dec": self.wavg_dec,
            "effective_length": self.effective_length,
            "retention": self.retention,
            "slope_per_doubling": self.slope,
            "threshold": self.threshold,
        }


def summarize(means: Mapping[int, float | None], threshold: float = EFFECTIVE_THRESHOLD) -> Summary:
    """Every summary figure from a mean per length; lengths without a mean are left out of all of them."""
    known = {n: v for n, v in sorted(means.items()) if v is not None}
    return Summary(
        means=known,
        avg=average(known),
        wavg_inc=weighted_average(known, increasing=True),
        wavg_dec=weighted_average(known, increasing=False),
        effective_length=effective_length(known, threshold),
        retention=retention(known),
        slope=log2_slope(known),
        threshold=threshold,
    )


@dataclass(frozen=True)
class DepthMatrix:
    """Needle scores on a depth × length grid: `cells[(depth, length)]` is a CellScore whose `task` names the task."""

    depths: list[float]
    lengths: list[int]
    cells: dict[tuple[float, int], CellScore]


def depth_matrix(samples: Iterable[Mapping[str, Any]], task: str = "niah") -> DepthMatrix:
    """Group one task's samples by their `metadata["depth"]` (percent) and length, like `cell_scores` does by task."""
    by_depth: dict[float, list[Mapping[str, Any]]] = {}
    for record in samples:
        depth = (record.get("metadata") or {}).get("depth")
        if record.get("task") == task and isinstance(depth, (int, float)):
            by_depth.setdefault(float(depth), []).append(record)
    cells = {}
    for depth, records in by_depth.items():
        for (_, length), cell in cell_scores(records).items():
            cells[(depth, length)] = cell
    return DepthMatrix(
        depths=sorted(by_depth), lengths=sorted({n for _, n in cells}), cells=dict(sorted(cells.items()))
    )
