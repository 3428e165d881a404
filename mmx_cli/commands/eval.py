"""`mmx eval ruler` and `mmx eval niah`: parse options, draw progress, print the score table.

The work is `mmx.workflows.evaluate` (the request, the sweep, the run); this module turns command-line text into a
request and the sweep's records into a table or JSON. Heavy imports (torch, the model) happen inside the workflow, so
`mmx --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mmx.commands import flags
from mmx.commands.app import eval_app
from mmx.commands.progress import sweep_progress
from mmx.sizes import format_size
from mmx.workflows.evaluate.request import DEFAULT_MODEL, EvalRequest, build_request, resolve_tasks


def _cell_text(cell: Any) -> str:
    if cell is None:
        return "–"
    if cell.mean is not None:
        return f"{cell.mean:.1f}"
    return "OOM" if cell.oom else "err"


def score_table(records: list[dict[str, Any]], tasks: list[str], lengths: list[int]) -> Table:
    """Task × length scores (0–100) with the per-length mean over tasks as the last row."""
    from mmx.results.aggregate import cell_scores, length_means

    cells = cell_scores(records)
    table = Table()
    table.add_column("task")
    for length in lengths:
        table.add_column(format_size(length), justify="right")
    for task in tasks:
        table.add_row(task, *(_cell_text(cells.get((task, n))) for n in lengths))
    means = length_means(cells, tasks, lengths)
    partial = False
    row = []
    for n in lengths:
        m = means[n]
        if m.complete:
            row.append(f"{m.mean:.1f}")
        elif m.mean is not None:
            partial = True
            row.append(f"{m.mean:.1f}*")
        else:
            row.append("OOM" if any(cells.get((t, n)) and cells[(t, n)].oom for t in tasks) else "–")
    table.add_section()
    table.add_row("mean", *row, style="bold")
    if partial:
        table.caption = "* mean over the tasks that have a score at that length"
    return table


def json_report(run_dir: Path, resumed: bool, model: dict[str, Any], result: Any, tasks: list[str]) -> dict[str, Any]:
    """`--json`: the run directory, the model, every cell, and the per-length means (scores 0–100)."""
    from mmx.results.aggregate import cell_scores, length_means

    cells = cell_scores(result.records)
    means = length_means(cells, tasks, result.lengths)
    return {
        "run_dir": str(run_dir),
        "resumed": resumed,
        "model": model,
        "lengths": result.lengths,
        "skipped_lengths": result.skipped_lengths,
        "new_samples": result.new_records,
        "cells": [
            {"task": c.task, "length": c.length, "score": c.mean, "n": c.n, "status": dict(c.counts)}
            for c in cells.values()
        ],
        "length_means": {str(n): {"mean": m.mean, "complete": m.complete} for n, m in means.items()},
    }


def run_eval(request: EvalRequest, *, json_output: bool, quiet: bool) -> None:
    """Run the request with progress on stderr, then print the table or JSON."""
    from mmx.workflows.evaluate.run import run_eval as run

    progress = sweep_progress(quiet)
    try:
        outcome = run(request, progress, announce=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        progress.end()
        print(f"interrupted: rerun the same command with --out {request.out} to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    names, result = list(request.tasks), outcome.result
    if json_output:
        print(json.dumps(json_report(outcome.out, outcome.resumed, outcome.model, result, names), indent=2))
        return
    console = Console()
    console.print(f"{request.suite} · {outcome.model.get('name', request.model)}", markup=False, highlight=False)
    console.print(score_table(result.records, names, result.lengths))
    console.print(f"results in {outcome.out}", markup=False, highlight=False)


_MODEL = typer.Option(
    DEFAULT_MODEL, "--model", help="Model spec: mmx-mini, mmx:PATH, random:PRESET[:SEED], hf:…, openai:…"
)
_MAX_LEN = typer.Option(None, "--max-len", help="Sweep powers of two from 4k up to this size.", show_default="128k")
_LENGTHS = typer.Option(None, "--lengths", help="Exact lengths instead of a sweep, e.g. 4k,16k,64k.")
_OUT = typer.Option(
    None, "--out", help="Run directory; rerun with the same --out to resume.", show_default="runs/SUITE-MODEL-TIME"
)
_SEED = typer.Option(0, "--seed", help="Seed for sample generation (same seed, same prompts).")
_BATCH = typer.Option("auto", "--batch-size", help="Prompts per generate call: auto (by free memory) or N.")
_NO_PREFIX = typer.Option(False, "--no-answer-prefix", help="Do not start the answer for the model.")
_JSON = typer.Option(False, "--json", help="Print machine-readable JSON instead of the table.")
_QUIET = typer.Option(False, "--quiet", help="No progress bars (as when stdout is not a terminal).")


@eval_app.command()
def ruler(
    model: str = _MODEL,
    tasks: str = typer.Option("all", "--tasks", help="all, or a comma list of RULER task names."),
    max_len: str | None = _MAX_LEN,
    lengths: str | None = _LENGTHS,
    samples: int = typer.Option(100, "--samples", help="Samples per task per length."),
    out: Path | None = _OUT,
    seed: int = _SEED,
    batch_size: str = _BATCH,
    no_answer_prefix: bool = _NO_PREFIX,
    device: str = flags.DEVICE,
    dtype: str = flags.DTYPE,
    max_context: int | None = flags.MAX_CONTEXT,
    chat_template: str | None = flags.CHAT_TEMPLATE,
    system_prompt: str | None = flags.SYSTEM_PROMPT,
    model_args: str | None = flags.MODEL_ARGS,
    tokenizer: str | None = flags.TOKENIZER,
    api: str | None = flags.API,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    timeout: float | None = flags.TIMEOUT,
    retries: int | None = flags.RETRIES,
    json_output: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """The 13 RULER tasks (or a subset) at each length; prints a task × length score table."""
    given = dict(locals())
    chosen = resolve_tasks(given.pop("tasks"), answer_prefix=not no_answer_prefix)
    json_output, quiet = given.pop("json_output"), given.pop("quiet")
    request = build_request("ruler", chosen, [("--tasks", ",".join(chosen))], **given)
    run_eval(request, json_output=json_output, quiet=quiet)


@eval_app.command()
def niah(
    model: str = _MODEL,
    max_len: str | None = _MAX_LEN,
    lengths: str | None = _LENGTHS,
    depths: int = typer.Option(10, "--depths", help="Needle depths from 0% to 100%; sample i sits at depth i % N."),
    spacing: str = typer.Option("linear", "--spacing", help="Depth spacing: linear, or sigmoid (denser at the ends)."),
    samples: int | None = typer.Option(None, "--samples", help="Samples per length.", show_default="one per depth"),
    out: Path | None = _OUT,
    seed: int = _SEED,
    batch_size: str = _BATCH,
    no_answer_prefix: bool = _NO_PREFIX,
    device: str = flags.DEVICE,
    dtype: str = flags.DTYPE,
    max_context: int | None = flags.MAX_CONTEXT,
    chat_template: str | None = flags.CHAT_TEMPLATE,
    system_prompt: str | None = flags.SYSTEM_PROMPT,
    model_args: str | None = flags.MODEL_ARGS,
    tokenizer: str | None = flags.TOKENIZER,
    api: str | None = flags.API,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    timeout: float | None = flags.TIMEOUT,
    retries: int | None = flags.RETRIES,
    json_output: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Needle in a haystack over a depth × length grid; prints scores per length (see `mmx report` for the heatmap)."""
    given = dict(locals())
    from mmx.tasks import get_task

    task = get_task(  # checks both grid options
        "niah", depths=given.pop("depths"), spacing=given.pop("spacing"), answer_prefix=not no_answer_prefix
    )
    json_output, quiet = given.pop("json_output"), given.pop("quiet")
    given["samples"] = samples if samples is not None else depths
    request = build_request("niah", {task.name: task}, [("--depths", depths), ("--spacing", spacing)], **given)
    run_eval(request, json_output=json_output, quiet=quiet)
