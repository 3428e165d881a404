"""`mmx bench throughput` as a workflow: the subjects a model spec stands for, and a resumable measuring run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.results.lock import RunLock
from mmx.results.store import RunStore
from mmx.workflows.bench.peaks import DevicePeaks
from mmx.workflows.bench.subjects import Placement, Subject, backend_subjects, random_subjects
from mmx.workflows.bench.throughput import Plan, ThroughputBench
from mmx.workflows.provenance import run_metadata


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
    """Open (or resume) the run directory and measure every subject; return the model's description and records."""
    described = {**subjects[0].info, "name": subjects[0].family}
    meta = run_metadata("bench", command, "throughput", described, params)
    meta |= {"subjects": [s.info for s in subjects], "peaks": ceilings.to_dict()}
    store = RunStore(out, on_corrupt=lambda m: warn(f"{m} (that measurement will run again)"))
    with RunLock(out, command):  # one writer per run directory
        resumed = store.open(meta)
        announce(f"{'resuming' if resumed else 'writing'} run in {out} (resume with --out {out})")
        bench = ThroughputBench(plan, store, place.device, ceilings, place.dtype, log=log, warn=warn)
        bench.run(subjects)
    return described, store.bench()
