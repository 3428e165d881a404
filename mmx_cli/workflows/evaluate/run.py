"""An eval request end to end: load the backend, open (or resume) the run directory, run the sweep — in one process,
or as one rank of a torchrun job that splits the sweep (`mmx.workflows.evaluate.job`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.model.backends.base import load_backend
from mmx.model.parallel.runtime import launched
from mmx.results.lock import RunLock
from mmx.results.rundir import check_out_dir
from mmx.results.store import RunStore
from mmx.sizes import format_size
from mmx.workflows.evaluate.judge import Judge
from mmx.workflows.evaluate.request import EvalRequest
from mmx.workflows.evaluate.sweep import (
    Progress,
    SilentProgress,
    Sweep,
    SweepResult,
    run_sweep,
    split_by_context,
)
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
) -> EvalOutcome | None:
    """Run `request`; `announce` hears where the run is written (before the first sample), `progress` the rest.

    The run directory is held (`RunLock`) from before the model loads until the sweep ends, so a second eval on it
    is refused at once, naming this process. In a torchrun job every rank calls this; rank 0 (the one writer) holds
    the directory and returns the outcome, the others None.
    """
    progress = progress or SilentProgress()
    if launched():
        from mmx.workflows.evaluate.job import run_job

        return run_job(request, progress, announce)
    check_out_dir(request.out, "eval")
    check_memory(request, announce)
    with RunLock(request.out, request.command):
        return _run_locked(request, progress, announce)


def _run_locked(request: EvalRequest, progress: Progress, announce: Callable[[str], None] | None) -> EvalOutcome:
    backend = load_backend(request.model, **request.options)
    judge = Judge(request.judge, request.judge_model) if request.judge else None
    plan = Sweep.for_request(request, judge)
    check_something_to_run(plan.lengths, backend.max_context)
    described = backend.describe()
    store = RunStore(request.out, on_corrupt=lambda m: progress.note(f"{m} (its sample will run again)"))
    resumed = store.open(run_metadata("eval", request.command, request.suite, described, plan.params(described)))
    if announce is not None:
        verb = "resuming" if resumed else "writing"
        announce(f"{verb} run in {request.out} (resume with --out {request.out})")
    result = run_sweep(backend, plan, store, progress, judge=judge)
    return EvalOutcome(request.out, resumed, described, result)


def check_memory(request: EvalRequest, announce: Callable[[str], None] | None) -> None:
    """Print the per-rank memory plan of a sharded or quantized native model at the longest length, and refuse a
    run that cannot fit, before anything is loaded."""
    from mmx.model.backends.native import memory_plan_for

    planned = memory_plan_for(request.model, request.options, max(request.lengths), rows=request.batch_size or 1)
    if planned is None:
        return
    plan, capacity, where = planned
    if announce is not None:
        for line in plan.lines():
            announce(line)
    plan.check(capacity, where)


def check_something_to_run(lengths: list[int], max_context: int | None) -> None:
    """Refuse a sweep whose every length is beyond the model's context: it would write an empty run."""
    if not split_by_context(lengths, max_context)[0]:
        asked = ", ".join(format_size(n) for n in lengths)
        raise MmxError(
            f"nothing to run: every length asked for ({asked}) is longer than the model's maximum context "
            f"({format_size(max_context or 0)} tokens)",
            "pick shorter --lengths or --max-len (or raise --max-context if the model can take more)",
        )
