"""`mmx.evaluate`: the `mmx eval ruler|niah` command as one Python call, writing the same run directory.

It builds the very request the CLI builds (same pinned command, same `run.json` parameters), so a run started from
Python resumes from the CLI and the other way round, and both write identical `samples.jsonl` files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.results.run_results import RunResults, load_run
from mmx.sizes import format_size
from mmx.workflows.evaluate.progress import Progress
from mmx.workflows.evaluate.request import DEFAULT_MODEL, build_request, resolve_tasks
from mmx.workflows.evaluate.run import run_eval

SUITES = ("ruler", "niah")
DEFAULT_SAMPLES = 100  # per task and length, as `mmx eval ruler`


def evaluate(
    model: str = DEFAULT_MODEL,
    suite: str = "ruler",
    *,
    tasks: str | Sequence[str] = "all",
    lengths: str | Sequence[int | str] | None = None,
    max_len: str | int | None = None,
    samples: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    batch_size: int | str = "auto",
    answer_prefix: bool = True,
    source: str = "mmx",
    options: Sequence[str] = (),
    depths: int = 10,
    spacing: str = "linear",
    judge: str | None = None,
    judge_model: str | None = None,
    progress: Progress | None = None,
    **backend_options: Any,
) -> RunResults | None:
    """Evaluate `model` on `suite` ("ruler" or "niah") and return the run's results.

    `lengths` takes what `--lengths` takes ("4k,16k") or a list of sizes; `max_len` sweeps the powers of two from 4k.
    `samples` defaults to 100 per cell for RULER and to one per depth for NIAH. `out` is the run directory (a new
    one under `runs/` by default; an existing run with the same parameters resumes). `source` and `options` are
    `--source` (mmx, ruler:DIR, lm-eval) and the `-o KEY=VALUE` task options; `judge` rates NIAH answers
    1–10. Backend options are the CLI's
    (`device`, `dtype`, `max_context`, `api_model`, `tokenizer`, `concurrency`, `timeout`, `retries`, `tp`,
    `quantize_experts`, ...). Called by every rank of a torchrun job, it returns the results on rank 0 and None on
    the others (docs/distributed.md).
    """
    if suite not in SUITES:
        raise MmxError(f"unknown suite {suite!r}", f"use one of {', '.join(SUITES)} (lm-eval: `mmx eval lm-eval`)")
    if suite == "ruler":
        chosen = resolve_tasks(tasks, answer_prefix, source, options)
        suite_flags: list[tuple[str, Any]] = [("--tasks", ",".join(chosen.tasks))]
        default = DEFAULT_SAMPLES
    else:
        pairs = [f"depths={depths}", f"spacing={spacing}", *options]
        chosen = resolve_tasks(["niah"], answer_prefix, "mmx", pairs)
        suite_flags = [("--depths", depths), ("--spacing", spacing), ("--judge", judge), ("--judge-model", judge_model)]
        default = len(chosen.tasks["niah"].depths)
    request = build_request(
        suite,
        chosen,
        suite_flags,
        model=model,
        max_len=None if max_len is None else str(max_len),
        lengths=_lengths_text(lengths),
        samples=samples,
        default_samples=default,
        option=list(options),
        out=out,
        seed=seed,
        batch_size=batch_size,
        no_answer_prefix=not answer_prefix,
        judge=judge,
        judge_model=judge_model,
        **backend_options,
    )
    outcome = run_eval(request, progress)
    return None if outcome is None else load_run(outcome.out)


def _lengths_text(lengths: str | Sequence[int | str] | None) -> str | None:
    """What `--lengths` would say: a comma list, from a string as given or from sizes (ints or size strings)."""
    if lengths is None or isinstance(lengths, str):
        return lengths
    return ",".join(format_size(n) if isinstance(n, int) else str(n) for n in lengths)
