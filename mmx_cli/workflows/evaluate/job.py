"""One rank of a torchrun eval job: load this rank's model, learn from rank 0 what is on disk, run this replica's
share of the sweep, and (on rank 0) write every rank's records. The parts are in `distributed`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from mmx.model.backends.base import load_backend
from mmx.model.parallel.runtime import ParallelContext, join
from mmx.results.lock import RunLock
from mmx.results.rundir import check_out_dir
from mmx.results.store import RunStore
from mmx.workflows.evaluate import distributed as dp
from mmx.workflows.evaluate.judge import Judge
from mmx.workflows.evaluate.progress import Progress
from mmx.workflows.evaluate.request import EvalRequest
from mmx.workflows.evaluate.run import EvalOutcome, check_memory
from mmx.workflows.evaluate.sweep import Sweep, run_sweep, split_by_context
from mmx.workflows.provenance import run_metadata


@dataclass
class _Rank:
    """What one rank knows once the job has started: its place, its model, the sweep and what is on disk."""

    request: EvalRequest
    context: ParallelContext
    backend: Any
    sweep: Sweep
    judge: Judge | None
    group: Any  # the records group (gloo)
    existing: list[dict[str, Any]]

    @property
    def cells(self) -> list[tuple[str, int]]:
        lengths, _ = split_by_context(self.request.lengths, self.backend.max_context)
        return [(name, length) for length in lengths for name in self.request.tasks]

    def share(self) -> Callable[[str, int, int], bool]:
        return dp.share_of(self.context, self.cells, self.request.samples, dp.done_keys(self.existing))


def run_job(request: EvalRequest, progress: Progress, announce: Callable[[str], None] | None) -> EvalOutcome | None:
    """This rank's part of `request`; rank 0 returns the outcome of the whole job, every other rank None.

    Rank 0 checks the output directory and the memory plan before anything loads; if it fails, it exits and torchrun
    ends the other ranks.
    """
    context = join(int(request.options.get("tp") or 1), request.options.get("device"))
    if context.rank != 0:
        return _run_rank(request, context, progress, announce)
    check_out_dir(request.out, "eval")
    check_memory(request, announce)
    with RunLock(request.out, request.command):  # the job's one writer holds the directory, as one process would
        return _run_rank(request, context, progress, announce)


def _run_rank(
    request: EvalRequest, context: ParallelContext, progress: Progress, announce: Callable[[str], None] | None
) -> EvalOutcome | None:
    backend = load_backend(request.model, **request.options)
    group = dp.records_group()
    judge = Judge(request.judge, request.judge_model) if request.judge else None
    sweep = Sweep.for_request(request, judge)
    described = backend.describe()
    opened: list[Any] = [None]
    store = None
    if context.rank == 0:
        meta = run_metadata("eval", request.command, request.suite, described, sweep.params(described))
        store = RunStore(request.out, on_corrupt=lambda m: progress.note(f"{m} (its sample will run again)"))
        resumed = store.open({**meta, "launch": context.describe()})
        if announce is not None:
            announce(f"{'resuming' if resumed else 'writing'} run in {request.out} (resume with --out {request.out})")
        opened = [(resumed, store.samples())]
    dist.broadcast_object_list(opened, src=0, group=group)  # every rank learns what is on disk
    resumed, existing = opened[0]
    rank = _Rank(request, context, backend, sweep, judge, group, existing)
    if store is None:
        _follow(rank)
        return None
    result = _write(rank, store, progress)
    return EvalOutcome(request.out, resumed, described, result)


def _follow(rank: _Rank) -> None:
    """Any rank but 0: run the replica's share; a leader sends each record to rank 0, then says it is done."""
    leader = rank.context.leader
    sink = dp.SenderStore(rank.group, rank.existing) if leader else dp.MirrorStore(rank.group, rank.existing)
    run_sweep(rank.backend, rank.sweep, sink, dp.follower_progress(rank.context), judge=rank.judge, share=rank.share())
    if leader:
        dp.send_records(None, rank.group)
    dist.barrier(group=rank.group)


def _write(rank: _Rank, store: RunStore, progress: Progress) -> Any:
    """Rank 0: start the writer, run its replica's share, wait for every other leader; the job's sweep result."""
    planned = {(name, length, i) for name, length in rank.cells for i in range(rank.request.samples)}
    progress.begin(len(planned), len(planned & dp.done_keys(rank.existing)))
    writer = dp.RunWriter(store, progress, rank.existing, senders=rank.context.dp - 1)
    writer.start(rank.group)
    sink = dp.WriterStore(writer, rank.existing)
    result = run_sweep(rank.backend, rank.sweep, sink, dp.JobProgress(progress), judge=rank.judge, share=rank.share())
    writer.finish()
    progress.end()
    dist.barrier(group=rank.group)
    result.records, result.new_records = writer.records, writer.new_records
    return result
