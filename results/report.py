"""The analysis behind every report format: per run, the cell means, the mean per length, RULER's summary figures,
the needle grid and the bench curves — computed once, then drawn as terminal tables, Markdown, CSV or HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmx.results.aggregate import (
    EFFECTIVE_THRESHOLD,
    DepthMatrix,
    LengthMean,
    Summary,
    depth_matrix,
    length_means,
    summarize,
)
from mmx.results.published import Reference, get_reference
from mmx.results.runs import NIAH_TASK, Run, bench_series_name, load_runs

DEFAULT_THRESHOLD = EFFECTIVE_THRESHOLD


@dataclass(frozen=True)
class BenchPoint:
    """One bench measurement on a curve; a failed one (`status` not "ok") has no throughput to plot."""

    length: int
    tokens_per_s: float | None
    ttft_s: float | None
    peak_mem_gb: float | None
    utilization: float | None  # prefill: model FLOP utilisation; decode: share of peak memory bandwidth
    status: str


@dataclass(frozen=True)
class BenchSeries:
    """One curve: a bench kind ("prefill", "decode", "kernel") for one model or kernel at one batch size."""

    bench: str
    name: str
    points: list[BenchPoint]


@dataclass
class RunAnalysis:
    """Everything a report shows for one run."""

    run: Run
    means: dict[int, LengthMean]
    summary: Summary | None
    niah: DepthMatrix | None
    bench: list[BenchSeries]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def bench_series(run: Run) -> list[BenchSeries]:
    """Group a run's bench records into curves ordered by length."""
    grouped: dict[tuple[str, str], list[BenchPoint]] = {}
    for record in run.bench:
        if not isinstance(record.get("length"), int):
            continue
        key = (str(record.get("bench") or "bench"), bench_series_name(record))
        grouped.setdefault(key, []).append(
            BenchPoint(
                length=record["length"],
                tokens_per_s=_number(record.get("tokens_per_s")),
                ttft_s=_number(record.get("ttft_s")),
                peak_mem_gb=_number(record.get("peak_mem_gb")),
                utilization=_number(record.get("mfu", record.get("bandwidth_util"))),
                status=str(record.get("status") or "ok"),
            )
        )
    return [
        BenchSeries(bench=bench, name=name, points=sorted(points, key=lambda p: p.length))
        for (bench, name), points in grouped.items()
    ]


def analyse(run: Run, threshold: float) -> RunAnalysis:
    """Cell means → mean per length → summary, over the tasks and lengths the run asked for."""
    tasks = run.score_tasks if run.kind == "eval" else []  # lm-eval runs list their tasks too, scored elsewhere
    lengths = sorted({*run.expected_lengths, *(n for t, n in run.cells if t != NIAH_TASK)}) if tasks else []
    means = length_means(run.cells, tasks, lengths) if tasks else {}
    summary = summarize({n: m.mean for n, m in means.items()}, threshold) if tasks else None
    niah = None
    if run.has_niah:
        found = depth_matrix(run.samples, NIAH_TASK)
        niah = DepthMatrix(found.depths, sorted({*found.lengths, *run.expected_lengths}), found.cells)
    return RunAnalysis(run=run, means=means, summary=summary, niah=niah, bench=bench_series(run))


@dataclass
class Report:
    """A set of runs analysed together, plus the published reference rows asked for."""

    analyses: list[RunAnalysis]
    references: list[Reference]
    threshold: float
    created_at: str

    @classmethod
    def build(
        cls,
        paths: Sequence[str | Path],
        references: Sequence[str] = (),
        threshold: float = DEFAULT_THRESHOLD,
        join: bool = True,
    ) -> Report:
        runs = load_runs(list(paths), join=join)
        return cls(
            analyses=[analyse(run, threshold) for run in runs],
            references=[get_reference(key) for key in references],
            threshold=threshold,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    @property
    def scored(self) -> list[RunAnalysis]:
        """Runs with per-length scores (RULER-style tasks), in the order given."""
        return [a for a in self.analyses if a.summary is not None]

    @property
    def lengths(self) -> list[int]:
        """The length columns of the score tables: every length a scored run asked for or holds."""
        found = {n for a in self.scored for n in a.means}
        if not found:
            found = {n for ref in self.references for n in ref.means}
        return sorted(found)

    def reference_means(self, ref: Reference) -> dict[int, float]:
        """A reference row restricted to the table's lengths, so its Avg compares with the measured rows'."""
        return {n: v for n, v in ref.means.items() if n in self.lengths}

    def to_dict(self) -> dict[str, Any]:
        """The report's numbers as plain JSON (embedded in the HTML for anyone who wants to re-plot them)."""
        runs = []
        for a in self.analyses:
            run = a.run
            runs.append(
                {
                    "label": run.label,
                    "path": run.directories,
                    "kind": run.kind,
                    "model": run.model,
                    "random_weights": run.random_weights,
                    "params": run.params,
                    "versions": run.meta.get("versions"),
                    "hardware": run.meta.get("hardware"),
                    "git_commit": run.meta.get("git_commit"),
                    "started_at": run.meta.get("started_at"),
                    "status": run.progress.status,
                    "notes": run.progress.notes,
                    "cells": [
                        {"task": c.task, "length": c.length, "score": c.mean, "n": c.n, "statuses": dict(c.counts)}
                        for c in run.cells.values()
                    ],
                    "summary": a.summary.to_dict() if a.summary else None,
                    "niah": _matrix_dict(a.niah) if a.niah else None,
                    "bench": [
                        {"bench": s.bench, "name": s.name, "points": [vars(p) for p in s.points]} for s in a.bench
                    ],
                    "lm_eval": run.lm_eval,
                }
            )
        return {
            "created_at": self.created_at,
            "threshold": self.threshold,
            "runs": runs,
            "references": [
                {"key": r.key, "label": r.label, "source": r.source, "means": {str(n): v for n, v in r.means.items()}}
                for r in self.references
            ],
        }


def _matrix_dict(matrix: DepthMatrix) -> dict[str, Any]:
    return {
        "depths": matrix.depths,
        "lengths": matrix.lengths,
        "scores": [[_cell_mean(matrix, d, n) for n in matrix.lengths] for d in matrix.depths],
    }


def _cell_mean(matrix: DepthMatrix, depth: float, length: int) -> float | None:
    cell = matrix.cells.get((depth, length))
    return cell.mean if cell else None
