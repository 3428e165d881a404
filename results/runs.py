"""Loading run directories for a report, and working out what a run still lacks.

A report must be honest about partial data: a run that is still going, stopped early, or lost cells to OOM reports
the cells it has and lists what its own `run.json` parameters promised but the disk does not hold.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.results.aggregate import OK, OOM, CellScore, cell_scores, sample_status
from mmx.results.store import RUN_FILE, RunStore
from mmx.sizes import format_size, parse_size

LM_EVAL_FILE = "lm_eval_results.json"
NIAH_TASK = "niah"
_LISTED = 6  # missing cells named one by one before "and N more"


@dataclass
class Run:
    """One run directory's metadata and records; `label` is the column-block heading, unique within a report."""

    path: Path
    meta: dict[str, Any]
    samples: list[dict[str, Any]]
    bench: list[dict[str, Any]]
    lm_eval: dict[str, dict[str, Any]] | None
    label: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Read a run directory written by RunStore; a damaged lm-eval result file is a user error, not a crash."""
        store = RunStore(path)
        meta = store.meta
        lm_eval = None
        lm_path = store.dir / LM_EVAL_FILE
        if lm_path.exists():
            try:
                lm_eval = json.loads(lm_path.read_text())
            except json.JSONDecodeError as err:
                raise MmxError(f"{lm_path} is not valid JSON ({err.msg})", "rerun the lm-eval command") from None
        run = cls(path=store.dir, meta=meta, samples=store.samples(), bench=store.bench(), lm_eval=lm_eval)
        run.label = run.model_name
        return run

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind") or "eval")

    @property
    def model(self) -> dict[str, Any]:
        return self.meta.get("model") or {}

    @property
    def params(self) -> dict[str, Any]:
        return self.meta.get("params") or {}

    @property
    def model_name(self) -> str:
        return str(self.model.get("name") or self.model.get("spec") or self.path.name)

    @property
    def random_weights(self) -> bool:
        """True when the model under test had untrained weights, so its scores say nothing about quality."""
        return bool(self.model.get("random_weights")) or str(self.model.get("spec", "")).startswith("random:")

    @cached_property
    def cells(self) -> dict[tuple[str, int], CellScore]:
        return cell_scores(self.samples)

    @property
    def expected_tasks(self) -> list[str]:
        """The tasks `run.json` asked for, else the ones on disk."""
        tasks = self.params.get("tasks")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        return list(tasks) if tasks else sorted({t for t, _ in self.cells})

    @property
    def expected_lengths(self) -> list[int]:
        """The lengths `run.json` asked for (ints or size strings), else the ones on disk."""
        lengths = self.params.get("lengths")
        if isinstance(lengths, str):
            lengths = lengths.split(",")
        if lengths:
            return sorted({n if isinstance(n, int) else parse_size(str(n)) for n in lengths})
        return sorted({n for _, n in self.cells})

    @property
    def score_tasks(self) -> list[str]:
        """Tasks that belong in score-per-length tables (the needle grid has its own heatmap)."""
        return [t for t in self.expected_tasks if t != NIAH_TASK]

    @property
    def has_niah(self) -> bool:
        return any(r.get("task") == NIAH_TASK for r in self.samples) or NIAH_TASK in self.expected_tasks

    @cached_property
    def progress(self) -> Progress:
        return progress(self)


@dataclass(frozen=True)
class Progress:
    """What a run holds against what its parameters promised."""

    expected: int | None
    recorded: int
    statuses: dict[str, int]
    short_cells: list[tuple[str, int, int, int]] = field(default_factory=list)  # task, length, recorded, expected
    oom_cells: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.notes


def progress(run: Run) -> Progress:
    """Compare the samples (or bench records, or lm-eval results) on disk with what the run was started to produce."""
    if run.kind == "lm-eval":
        notes = [] if run.lm_eval else [f"no {LM_EVAL_FILE} yet: the run is still going or stopped before the end"]
        return Progress(expected=None, recorded=len(run.lm_eval or {}), statuses={}, notes=notes)
    if run.kind == "bench":
        return _bench_progress(run)
    statuses = Counter(sample_status(r) for r in run.samples)
    per_sample = run.params.get("samples")
    notes: list[str] = []
    short: list[tuple[str, int, int, int]] = []
    expected = None
    if isinstance(per_sample, int) and run.params.get("tasks") and run.params.get("lengths"):
        expected = per_sample * len(run.expected_tasks) * len(run.expected_lengths)
        for task in run.expected_tasks:
            for length in run.expected_lengths:
                cell = run.cells.get((task, length))
                got = cell.total if cell else 0
                if got < per_sample:
                    short.append((task, length, got, per_sample))
        if short:
            notes.append(
                f"incomplete: {len(run.samples)} of {expected} samples on disk (still running, or stopped early); "
                f"{len(short)} cell(s) short: {_name_cells([(t, n, f' {g}/{e}') for t, n, g, e in short])}"
            )
    oom = [key for key, cell in run.cells.items() if cell.oom]
    if oom:
        notes.append(f"{len(oom)} cell(s) ran out of memory: {_name_cells([(t, n, '') for t, n in oom])}")
    failed = sum(count for status, count in statuses.items() if status not in (OK, OOM))
    if failed:
        notes.append(f"{failed} sample(s) ended in an error and are left out of the means")
    if not run.samples and expected is None:
        notes.append("no samples on disk yet")
    return Progress(
        expected=expected,
        recorded=len(run.samples),
        statuses=dict(statuses),
        short_cells=short,
        oom_cells=oom,
        notes=notes,
    )


def _bench_progress(run: Run) -> Progress:
    statuses = Counter(str(r.get("status") or OK) for r in run.bench)
    notes = []
    if not run.bench:
        notes.append("no measurements on disk yet")
    oom = [r for r in run.bench if r.get("status") == OOM]
    if oom:
        names = _name_cells([(f"{r.get('bench', '')} {bench_series_name(r)}", r.get("length", 0), "") for r in oom])
        notes.append(f"{len(oom)} measurement(s) ran out of memory: {names}")
    failed = sum(count for status, count in statuses.items() if status not in (OK, OOM))
    if failed:
        notes.append(f"{failed} measurement(s) ended in an error")
    return Progress(expected=None, recorded=len(run.bench), statuses=dict(statuses), notes=notes)


def bench_series_name(record: dict[str, Any]) -> str:
    """What distinguishes one curve from another within a bench run: model or kernel, and batch size."""
    name = str(record.get("impl") or record.get("model") or "")
    batch = record.get("batch_size")
    return f"{name} ×{batch}" if batch not in (None, 1) else name


def _name_cells(cells: list[tuple[str, int, str]]) -> str:
    named = [f"{task} {format_size(int(length))}{extra}" for task, length, extra in cells[:_LISTED]]
    more = f" and {len(cells) - _LISTED} more" if len(cells) > _LISTED else ""
    return ", ".join(named) + more


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Load every run directory and give each a unique label: the model name, plus the directory where names repeat."""
    if not paths:
        raise MmxError("no run directories given", "pass one or more directories written by mmx eval / mmx bench")
    runs = []
    for path in paths:
        if not (Path(path) / RUN_FILE).exists() and not Path(path).is_dir():
            raise MmxError(f"{path} does not exist", "pass a run directory, e.g. runs/<name>")
        runs.append(Run.load(path))
    names = Counter(run.model_name for run in runs)
    for run in runs:
        if names[run.model_name] > 1:
            run.label = f"{run.model_name} [{run.path.name}]"
    return runs
