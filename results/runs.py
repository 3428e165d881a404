"""Loading run directories for a report, and working out what a run still lacks.

A report must be honest about partial data: a run that is still going, stopped early, or lost cells to OOM reports
the cells it has and lists what its own `run.json` parameters promised but the disk does not hold.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.files import read_json, validated
from mmx.results.aggregate import OK, OOM, CellScore, cell_scores, sample_status
from mmx.results.schema import LmEvalResults
from mmx.results.store import RUN_FILE, RunStore, pinned_model
from mmx.sizes import format_size, parse_size

LM_EVAL_FILE = "lm_eval_results.json"
_LM_HINT = "rerun the lm-eval command on this directory (it resumes from its saved answers)"
NIAH_TASK = "niah"
_LISTED = 6  # missing cells named one by one before "and N more"
# eval parameters that may differ between runs joined into one curve (`join_parts`); every other one must match
_PART_PARAMS = frozenset({"lengths", "samples"})
_GRID_PARAMS = frozenset({"depths", "spacing"})  # a needle grid's depths, which joined heatmaps may differ in
# run.json fields that are per part: a joined run keeps each part's value, by directory name, where they differ
_PART_META = ("command", "git_commit", "hardware", "versions", "started_at")


@dataclass
class Run:
    """One run directory's metadata and records; `label` is the column-block heading, unique within a report."""

    path: Path
    meta: dict[str, Any]
    samples: list[dict[str, Any]]
    bench: list[dict[str, Any]]
    lm_eval: dict[str, dict[str, Any]] | None
    label: str = ""
    key: str = ""  # unique within a report and safe in an HTML id: "1-mmx-mini"
    parts: list[Run] = field(default_factory=list)  # the runs a joined run was made of (`join_parts`), else empty

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Read a run directory written by RunStore, checked at the boundary: a damaged `run.json` or lm-eval result
        file, or records of another run, is a user error, not a crash; a malformed record is reported and skipped."""
        store = RunStore(path)
        meta = store.meta
        store.check_identity()
        lm_eval = None
        lm_path = store.dir / LM_EVAL_FILE
        if lm_path.exists():
            lm_eval = validated(LmEvalResults, read_json(lm_path, _LM_HINT), str(lm_path), _LM_HINT).root
        run = cls(path=store.dir, meta=meta, samples=store.samples(), bench=store.bench(), lm_eval=lm_eval)
        run.label = run.model_name
        return run

    @property
    def name(self) -> str:
        """The directory name, or the parts' names joined with " + "."""
        return " + ".join(part.path.name for part in self.parts) if self.parts else self.path.name

    @property
    def directories(self) -> str:
        """Where the run's files are: its directory, or each part's."""
        return ", ".join(str(part.path) for part in self.parts) if self.parts else str(self.path)

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
    def source(self) -> dict[str, Any]:
        """Where the run's prompts came from (`params.source`); runs made before it was recorded used mmx's own
        generators, and their substitutes are read off their task parameters."""
        recorded = self.params.get("source")
        if isinstance(recorded, dict) and recorded.get("source"):
            return recorded
        return legacy_source(self.params) if self.kind == "eval" else {}

    @property
    def source_name(self) -> str:
        """A short name for tables: mmx, RULER data, lm-eval (empty for runs that are not eval sweeps)."""
        spec = str(self.source.get("source") or "")
        return "RULER data" if spec.startswith("ruler:") else spec

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
    def max_context(self) -> int | None:
        """The model's maximum context from its description; the runner skips longer lengths without a record."""
        value = self.model.get("max_context")
        return value if isinstance(value, int) and value > 0 else None

    def beyond_context(self, length: int) -> bool:
        """True for a length the model cannot take, so a missing cell there is expected, not a gap."""
        return self.max_context is not None and length > self.max_context

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


def legacy_source(params: dict[str, Any]) -> dict[str, Any]:
    """The provenance of an eval run recorded before runs named their prompt source: mmx's generators."""
    task_params = params.get("task_params") or {}
    substitutes = []
    if any((p.get("haystack_params") or {}).get("corpus") == "builtin" for p in task_params.values()):
        substitutes.append("essay haystack: mmx's generated prose instead of Paul Graham's essays")
    substitutes += [
        f"{p['substitute_for']}: synthetic documents ({name}) instead of the real QA data"
        for name, p in task_params.items()
        if p.get("substitute_for")
    ]
    why = "mmx's own prompts" + (", with substitutes" if substitutes else "")
    return {"source": "mmx", "substitutes": substitutes, "comparable": False, "not_comparable_because": why}


@dataclass(frozen=True)
class Progress:
    """What a run holds against what its parameters promised: `complete` when nothing asked for is missing,
    `failures` counts what ran and failed (OOM cells or measurements, errored samples); `notes` say it in words."""

    complete: bool
    recorded: int
    expected: int | None = None
    failures: int = 0
    short_cells: list[tuple[str, int, int, int]] = field(default_factory=list)  # task, length, recorded, expected
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.complete:
            return "incomplete"
        return "complete, with failures" if self.failures else "complete"


def progress(run: Run) -> Progress:
    """Compare the samples (or bench records, or lm-eval results) on disk with what the run was started to produce."""
    if run.kind == "lm-eval":
        notes = [] if run.lm_eval else [f"no {LM_EVAL_FILE} yet: the run is still going or stopped before the end"]
        return Progress(complete=bool(run.lm_eval), recorded=len(run.lm_eval or {}), notes=notes)
    if run.kind == "bench":
        return _bench_progress(run)
    if run.parts:
        return _joined_progress(run.parts)
    per_sample = run.params.get("samples")
    notes: list[str] = []
    short: list[tuple[str, int, int, int]] = []
    expected = None
    if isinstance(per_sample, int) and run.params.get("tasks") and run.params.get("lengths"):
        lengths = [n for n in run.expected_lengths if not run.beyond_context(n)]
        beyond = [format_size(n) for n in run.expected_lengths if run.beyond_context(n)]
        if beyond:
            notes.append(
                f"not run at {', '.join(beyond)}: longer than the model's maximum context "
                f"({format_size(run.max_context)} tokens)"
            )
        expected = per_sample * len(run.expected_tasks) * len(lengths)
        for task in run.expected_tasks:
            for length in lengths:
                cell = run.cells.get((task, length))
                got = cell.total if cell else 0
                if got < per_sample:
                    short.append((task, length, got, per_sample))
        if short:
            notes.append(
                f"incomplete: {len(run.samples)} of {expected} samples on disk (still running, or stopped early); "
                f"{len(short)} cell(s) short: {_name_cells([(t, n, f' {g}/{e}') for t, n, g, e in short])}"
            )
    elif not run.samples:
        notes.append("no samples on disk yet")
    oom = [key for key, cell in run.cells.items() if cell.oom]
    if oom:
        notes.append(f"{len(oom)} cell(s) ran out of memory: {_name_cells([(t, n, '') for t, n in oom])}")
    errors = sum(1 for r in run.samples if sample_status(r) not in (OK, OOM))
    if errors:
        notes.append(f"{errors} sample(s) ended in an error and are left out of the means")
    return Progress(
        complete=not short and bool(run.samples),
        recorded=len(run.samples),
        expected=expected,
        failures=len(oom) + errors,
        short_cells=short,
        notes=notes,
    )


def _joined_progress(parts: list[Run]) -> Progress:
    """A joined run is complete when every part is; each part's notes keep its directory name."""
    found = [part.progress for part in parts]
    expected = [p.expected for p in found]
    return Progress(
        complete=all(p.complete for p in found),
        recorded=sum(p.recorded for p in found),
        expected=None if None in expected else sum(e for e in expected if e is not None),
        failures=sum(p.failures for p in found),
        short_cells=[cell for p in found for cell in p.short_cells],
        notes=[f"{part.path.name}: {note}" for part, p in zip(parts, found, strict=True) for note in p.notes],
    )


def _bench_progress(run: Run) -> Progress:
    notes = [] if run.bench else ["no measurements on disk yet"]
    oom = [r for r in run.bench if r.get("status") == OOM]
    if oom:
        names = _name_cells([(f"{r.get('bench', '')} {bench_series_name(r)}", r.get("length", 0), "") for r in oom])
        notes.append(f"{len(oom)} measurement(s) ran out of memory: {names}")
    errors = sum(1 for r in run.bench if r.get("status") not in (None, OK, OOM))
    if errors:
        notes.append(f"{errors} measurement(s) ended in an error")
    return Progress(complete=bool(run.bench), recorded=len(run.bench), failures=len(oom) + errors, notes=notes)


def bench_series_name(record: dict[str, Any]) -> str:
    """What distinguishes one curve from another within a bench run: model or kernel, and batch size."""
    name = str(record.get("impl") or record.get("model") or "")
    batch = record.get("batch_size")
    return f"{name} ×{batch}" if batch not in (None, 1) else name


def _name_cells(cells: list[tuple[str, int, str]]) -> str:
    named = [f"{task} {format_size(int(length))}{extra}" for task, length, extra in cells[:_LISTED]]
    more = f" and {len(cells) - _LISTED} more" if len(cells) > _LISTED else ""
    return ", ".join(named) + more


def expand(path: Path) -> list[Path]:
    """A run directory itself, or, for a folder of runs such as `runs/`, each run directory directly inside it."""
    if not path.exists():
        raise MmxError(f"{path} does not exist", "pass a run directory, e.g. runs/<name>")
    if (path / RUN_FILE).exists() or not path.is_dir():
        return [path]
    inside = sorted(p for p in path.iterdir() if (p / RUN_FILE).exists())
    return inside or [path]  # an empty folder fails in Run.load with "not a run directory"


def _curve_key(run: Run) -> str | None:
    """What runs must share to be parts of one curve: everything in their parameters but lengths and samples per
    cell (the model's identity included); None for runs that are not eval sweeps over lengths."""
    if run.kind != "eval" or not run.params.get("lengths"):
        return None
    shared = {k: v for k, v in run.params.items() if k not in _PART_PARAMS}
    model = run.params.get("model")
    shared["model"] = pinned_model(model if isinstance(model, dict) else run.model)
    if NIAH_TASK in run.expected_tasks:  # needle grids of any depths join into one heatmap (unmeasured cells: grey)
        shared["task_params"] = {
            name: {k: v for k, v in p.items() if k not in _GRID_PARAMS}
            for name, p in (shared.get("task_params") or {}).items()
        }
        shared["task_options"] = {
            name: {k: v for k, v in p.items() if k not in _GRID_PARAMS}
            for name, p in (shared.get("task_options") or {}).items()
        }
    return json.dumps(shared, sort_keys=True, default=str)


def _joined(parts: list[Run]) -> Run:
    """One run holding the parts' samples: lengths are their union, and per-part metadata that differs (command,
    hardware, versions, ...) is kept by directory name."""
    meta = dict(parts[0].meta)
    meta["params"] = {
        **parts[0].params,
        "lengths": sorted({n for part in parts for n in part.expected_lengths}),
    }
    per_cell = {part.params.get("samples") for part in parts}
    if len(per_cell) > 1:  # say per part how many samples a cell has
        meta["params"]["samples"] = {part.path.name: part.params.get("samples") for part in parts}
    for key in _PART_META:
        values = {part.path.name: part.meta.get(key) for part in parts}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            meta[key] = values
    samples = [sample for part in parts for sample in part.samples]
    return Run(path=parts[0].path, meta=meta, samples=samples, bench=[], lm_eval=None, parts=parts)


def join_parts(runs: list[Run]) -> list[Run]:
    """Join eval runs that differ only in their lengths (disjoint) and samples per cell into one run each, so a model
    measured in pieces (say 4k–128k with 3 samples, then 256k–4M with 1) reads as one decay curve; the joined run
    takes the place of the first of its parts given. Runs that share lengths stay apart: they are repeats to compare."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = _curve_key(run)
        if key is not None:
            groups.setdefault(key, []).append(run)
    joined: dict[int, Run] = {}
    for group in groups.values():
        lengths = [n for run in group for n in run.expected_lengths]
        if len(group) > 1 and len(lengths) == len(set(lengths)):
            ordered = sorted(group, key=lambda run: min(run.expected_lengths))
            whole = _joined(ordered)
            joined.update({id(run): whole for run in group})
    out: list[Run] = []
    for run in runs:
        run = joined.get(id(run), run)
        if not any(run is kept for kept in out):
            out.append(run)
    return out


def load_runs(paths: list[str | Path], join: bool = True) -> list[Run]:
    """Load every run directory, join runs that are parts of one curve (unless `join` is False; see `join_parts`),
    and give each a unique label: the model name, plus the directory where names repeat (plus a counter where even
    those repeat, e.g. runs/a/run and runs/b/run)."""
    if not paths:
        raise MmxError("no run directories given", "pass one or more directories written by mmx eval / mmx bench")
    runs = [Run.load(run_dir) for path in paths for run_dir in expand(Path(path))]
    if join:
        runs = join_parts(runs)
    names = Counter(run.model_name for run in runs)
    seen: Counter[str] = Counter()
    for i, run in enumerate(runs, start=1):
        label = f"{run.model_name} [{run.name}]" if names[run.model_name] > 1 else run.model_name
        seen[label] += 1
        run.label = label if seen[label] == 1 else f"{label} ({seen[label]})"
        run.key = f"{i}-" + (re.sub(r"[^a-z0-9]+", "-", run.model_name.lower()).strip("-") or "run")
    return runs
