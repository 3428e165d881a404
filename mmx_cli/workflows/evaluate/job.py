"""One rank of a torchrun eval job: load this rank's model, learn from rank 0 what is on disk, run this replica's
share of the sweep, and (on rank 0) write every rank's records. The parts are in `distributed`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from mmx.model.backends.base import load_backend
from mmx.model.parallel.runtime import ParallelContext, current, join
from mmx.results.rundir import check_out_dir
from mmx.results.store import RunStore
from mmx.workflows.evaluate import distributed as dp
from mmx.workflows.evaluate.progress import Progress
from mmx.workflows.evaluate.request import EvalRequest
from mmx.workflows.evaluate.run import EvalOutcome, check_memory
from mmx.workflows.evaluate.sweep import Sweep, run_sweep, split_by_context
from mmx.workflows.provenance import run_metadata


def _open_run(
    request: EvalRequest, meta: dict[str, Any], progress: Progress, announce: Callable[[str], None] | None
) -> tuple[RunStore, bool, list[dict[str, Any]]]:
    """Rank 0: open (or resume) the run directory and read what it holds."""
    store = RunStore(request.out, on_corrupt=lambda m: progress.note(f"{m} (its sample will run again)"))
    resumed = store.open(meta)
    if announce is not None:
        verb = "resuming" if resumed else "writing"
        announce(f"{verb} run in {request.out} (resume with --out {request.out})")
    return store, resumed, store.samples()


def run_job(request: EvalRequest, progress: Progress, announce: Callable[[str], None] | None) -> EvalOutcome | None:
    """This rank's part of `request`; rank 0 returns the outcome of the whole job, every other rank None."""
    context = join(int(request.options.get("tp") or 1), request.options.get("device"))
    writer_rank = context.rank == 0
    if writer_rank:
        check_out_dir(request.out)
        check_memory(request, announce)
    backend = load_backend(request.model, **request.options)
    context = current() or context
    group = dp.records_group()
    plan = Sweep(
        request.suite,
        request.tasks,
        request.lengths,
        request.samples,
        request.seed,
        request.answer_prefix,
        request.batch_size,
    )
    described = backend.describe()
    opened: list[Any] = [None]
    if writer_rank:
        meta = run_metadata("eval", request.command, request.suite, described, plan.params(described))
        store, resumed, existing = _open_run(request, {**meta, "launch": context.describe()}, progress, announce)
        opened = [(resumed, existing)]
    dist.broadcast_object_list(opened, src=0, group=group)
    resumed, existing = opened[0]
    lengths, _ = split_by_context(request.lengths, backend.max_context)
    cells = [(name, length) for length in lengths for name in request.tasks]
    done = dp.done_keys(existing)
    share = dp.share_of(context, cells, request.samples, done)
    if not writer_rank:
        sink = dp.SenderStore(group, existing) if context.leader else dp.MirrorStore(group, existing)
        run_sweep(backend, plan, sink, dp.follower_progress(context), share)
        if context.leader:
            dp.send_records(None, group)
        dist.barrier(group=group)
        return None
    return _write_job(context, backend, plan, store, progress, existing, share, group, resumed, described, request)


def _write_job(
    context: ParallelContext,
    backend: Any,
    plan: Sweep,
    store: RunStore,
    progress: Progress,
    existing: list[dict[str, Any]],
    share: Callable[[str, int, int], bool],
    group: Any,
    resumed: bool,
    described: dict[str, Any],
    request: EvalRequest,
) -> EvalOutcome:
    """Rank 0: start the writer, run this replica's share, wait for every other leader, then report the job."""
    lengths, _ = split_by_context(request.lengths, backend.max_context)
    planned = {(name, length, i) for length in lengths for name in request.tasks for i in range(request.samples)}
    progress.begin(len(planned), len(planned & dp.done_keys(existing)))
    writer = dp.RunWriter(store, progress, existing, senders=context.dp - 1)
    writer.start(group)
    result = run_sweep(backend, plan, dp.WriterStore(writer, existing), dp.JobProgress(progress), share)
    writer.finish()
    progress.end()
    dist.barrier(group=group)
    result.records, result.new_records = writer.records, writer.new_records
    return EvalOutcome(request.out, resumed, described, result)
