"""An eval request end to end: load the backend, open (or resume) the run directory, run the sweep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmx.model.backends.base import load_backend
from mmx.results.rundir import check_out_dir
from mmx.results.store import RunStore
from mmx.workflows.evaluate.request import EvalRequest
from mmx.workflows.evaluate.sweep import Progress, SilentProgress, Sweep, SweepResult, run_sweep
from mmx.workflows.provenance import run_metadata


@dataclass
class EvalOutcome:
    """Where the run is, whether it resumed an earlier one, the model's description, and the sweep's records."""

    out: Path
    resumed: bool
    model: dict[str, Any]
    result: SweepResult


def run_eval(
    request: EvalRequest,
    progress: Progress | None = None,
    announce: Callable[[str], None] | None = None,
) -> EvalOutcome:
    """Run `request`; `announce` hears where the run is written (before the first sample), `progress` the rest."""
    progress = progress or SilentProgress()
    check_out_dir(request.out)
    backend = load_backend(request.model, **request.options)
    plan = Sweep(
        request.suite,
        request.tasks,
        request.lengths,
        request.samples,
        request.seed,
        request.answer_prefix,
        request.batch_size,
        request.prefix_reuse,
    )
    described = backend.describe()
    store = RunStore(request.out, on_corrupt=lambda m: progress.note(f"{m} (its sample will run again)"))
    resumed = store.open(run_metadata("eval", request.command, request.suite, described, plan.params(described)))
    if announce is not None:
        verb = "resuming" if resumed else "writing"
        announce(f"{verb} run in {request.out} (resume with --out {request.out})")
    result = run_sweep(backend, plan, store, progress)
    return EvalOutcome(request.out, resumed, described, result)
