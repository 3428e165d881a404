"""`mmx bench throughput` as a workflow: the subjects a model spec stands for, and a resumable measuring run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmx.errors import MmxError
from mmx.model.config import MiniMaxConfig
from mmx.model.generate import planned_chunk
from mmx.results.lock import RunLock
from mmx.results.store import RunStore
from mmx.workflows.bench.job import BenchJob, NoStore
from mmx.workflows.bench.peaks import DevicePeaks
from mmx.workflows.bench.subjects import Placement, Subject, backend_subjects, random_subjects
from mmx.workflows.bench.throughput import Plan, ThroughputBench
from mmx.workflows.provenance import run_metadata

if TYPE_CHECKING:
    from mmx.model.parallel.plan import MemoryPlan


def plan_subjects(
    spec: str,
    place: Placement,
    *,
    layers: int | None,
    archs: list[str],
    compare_transformers: bool,
    paths: list[str],
) -> list[Subject]:
    """Subjects for a spec: random presets can be reshaped and compared; checkpoints and hf: models run as loaded.
    Our models run once per prefill attention path in `paths`."""
    if spec.startswith("random:"):
        return random_subjects(
            spec, place, layers=layers, archs=archs, compare_transformers=compare_transformers, paths=paths
        )
    if spec.startswith("openai:"):
        raise MmxError("an openai: server cannot be timed in-process", "bench the model it serves with NAME or hf:")
    reshaping = [flag for flag, used in (("--layers", layers), ("--arch", archs != ["hybrid"])) if used]
    if compare_transformers:
        reshaping.append("--compare-transformers")
    if reshaping:
        raise MmxError(
            f"{', '.join(reshaping)} need random weights of a preset",
            "use --model random:PRESET (e.g. random:minimax-text-01 --layers 4); speed does not depend on the weights",
        )
    return backend_subjects(spec, place, paths)


def run_throughput(
    out: Path,
    *,
    command: list[str],
    params: dict[str, Any],
    subjects: list[Subject],
    plan: Plan,
    place: Placement,
    ceilings: DevicePeaks,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    announce: Callable[[str], None],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open (or resume) the run directory and measure every subject; return the model's description and records.

    In a torchrun job every rank measures and rank 0 alone opens the run; the other ranks return no records.
    """
    job = BenchJob(place.context) if place.context is not None and place.context.distributed else None
    writer = job is None or job.writer
    check_memory(subjects, plan, place, announce if writer else None)
    described = {**subjects[0].info, "name": subjects[0].family}
    with RunLock(out, command) if writer else nullcontext():  # one writer per run directory
        store: Any = None
        if writer:
            meta = run_metadata("bench", command, "throughput", described, params)
            meta |= {"subjects": [s.info for s in subjects], "peaks": ceilings.to_dict()}
            if job is not None:
                meta["launch"] = job.describe()
            store = RunStore(out, on_corrupt=lambda m: warn(f"{m} (that measurement will run again)"))
            resumed = store.open(meta)
            announce(f"{'resuming' if resumed else 'writing'} run in {out} (resume with --out {out})")
        if job is not None:  # the others learn what is on disk, so every rank skips the same measurements
            existing = job.agree(store.bench() if writer else None)
            store = store if writer else NoStore(existing)
            if not writer:
                rank = job.context.rank
                log, warn = (
                    (lambda _: None),
                    (lambda m: print(f"warning: [rank {rank}] {m}", file=sys.stderr, flush=True)),
                )
        bench = ThroughputBench(
            plan, store, place.device, ceilings, place.dtype, log=log, warn=warn, job=job, planner=planner(place)
        )
        bench.run(subjects)
        return described, store.bench() if writer else None


def planner(place: Placement) -> Callable[[MiniMaxConfig, int, int], MemoryPlan]:
    """The memory plan of our model of a config, at a length, for a number of cache rows, placed as `place`."""
    from mmx.model.parallel.plan import COMM_RESERVE, memory_plan

    elem = torch.finfo(place.dtype).bits // 8
    reserve = COMM_RESERVE if place.device.type == "cuda" and place.tp > 1 else 0

    def plan(config: MiniMaxConfig, length: int, rows: int) -> MemoryPlan:
        chunk = place.chunk_size or planned_chunk(config, elem, place.device)
        return memory_plan(
            config,
            length=length,
            dtype_bytes=elem,
            tp=place.tp,
            quantize=place.quantize,
            rows=rows,
            chunk=chunk,
            comm_reserve=reserve,
        )

    return plan


def check_memory(subjects: list[Subject], plan: Plan, place: Placement, announce: Callable[[str], None] | None) -> None:
    """Print each sharded or quantized model's per-rank memory plan at the longest length (rows: the prompt's cache
    and the largest decode batch), and refuse one that cannot fit this rank's device."""
    from mmx.model.memory import free_memory

    if not place.sharded:
        return
    for config in {id(s.config): s.config for s in subjects if s.config is not None}.values():
        planned = planner(place)(config, max(plan.lengths), 1 + max(plan.batch_sizes, default=0))
        if announce is not None:
            for line in planned.lines():
                announce(line)
        planned.check(free_memory(place.device), str(place.device))
