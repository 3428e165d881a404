"""`mmx eval ruler` and `mmx eval niah`: parse options, draw progress, print the score table.

The work is `mmx.workflows.evaluate` (the request, the sweep, the run); this module turns command-line text into a
request and the sweep's records into a table or JSON. Heavy imports (torch, the model) happen inside the workflow, so
`mmx --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
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
        "timing": None if result.timing is None else asdict(result.timing),
    }


def timing_line(timing: Any) -> str | None:
    """This sweep's wall time beside its prefill time and the prompt tokens prefilled against read from a shared
    prefix (None when the sweep ran nothing)."""
    if timing is None or not timing.prompt_tokens:
        return None
    parts = [f"wall {timing.wall_s:.1f} s", f"generate {timing.generate_s:.1f} s"]
    if timing.prefill_s is not None:
        parts.append(f"prefill {timing.prefill_s:.1f} s")
    if timing.prefilled_tokens is not None:
        parts.append(
            f"prompt tokens {timing.prompt_tokens:,}: {timing.prefilled_tokens:,} prefilled, "
            f"{timing.read_tokens:,} read from shared prefixes"
        )
    return " · ".join(parts)


def run_eval(request: EvalRequest, *, json_output: bool, quiet: bool, devices: str | None = None) -> None:
    """Run the request with progress on stderr, then print the table or JSON; with `devices`, as a job of one
    process per device (the ranks print; this process waits for them)."""
    from mmx.workflows.evaluate.run import run_eval as run

    if devices is not None:
        from mmx.workflows.launch import launch, parse_devices

        outputs = [flag for flag, on in (("--json", json_output), ("--quiet", quiet)) if on]
        tp = int(request.options.get("tp") or 1)
        raise typer.Exit(launch([*request.command[1:], *outputs], parse_devices(devices), tp))
    progress = sweep_progress(quiet)
    try:
        outcome = run(request, progress, announce=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        progress.end()
        if os.environ.get("RANK", "0") == "0":  # in a torchrun job, rank 0 says it once
            print(f"interrupted: rerun the same command with --out {request.out} to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    if outcome is None:  # another rank of a torchrun job: rank 0 reports the job
        return
    names, result = list(request.tasks), outcome.result
    if json_output:
        print(json.dumps(json_report(outcome.out, outcome.resumed, outcome.model, result, names), indent=2))
        return
    console = Console()
    title = f"{request.suite} · {outcome.model.get('name', request.model)} · prompts: {request.source['source']}"
    console.print(title, markup=False, highlight=False)
    if request.suite == "niah":
        _print_niah_grid(outcome.out)
    console.print(score_table(result.records, names, result.lengths))
    for note in source_notes(request.source):
        console.print(note, markup=False, highlight=False, style="dim")
    timing = timing_line(result.timing)
    if timing is not None:
        console.print(timing, markup=False, highlight=False)
    console.print(f"results in {outcome.out}", markup=False, highlight=False)


def source_notes(source: dict[str, Any]) -> list[str]:
    """What a reader must know before putting the table beside published numbers."""
    notes = [f"substitute: {s}" for s in source.get("substitutes", [])]
    if not source.get("comparable"):
        notes.append(f"not comparable with published RULER numbers: {source.get('not_comparable_because')}")
    return notes


def _print_niah_grid(run_dir: Path) -> None:
    """The depth × length grid, as `mmx report` prints it."""
    from mmx.results.console import print_tables
    from mmx.results.report import analyse
    from mmx.results.runs import Run
    from mmx.results.tables import niah_table

    table = niah_table(analyse(Run.load(run_dir), 0.0))
    if table is not None:
        print_tables([table])


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
_NO_REUSE = typer.Option(
    False,
    "--no-prefix-reuse",
    help="Prefill every prompt alone instead of computing the beginning a cell's prompts share once (speed only; "
    "not part of the run, so a resume may switch it).",
)
_JSON = typer.Option(False, "--json", help="Print machine-readable JSON instead of the table.")
_OPTION = typer.Option(
    [], "--option", "-o", help="Task option KEY=VALUE, or TASK.KEY=VALUE for one task (repeatable; see mmx tasks list)."
)
_QUIET = typer.Option(False, "--quiet", help="No progress bars (as when stdout is not a terminal).")


@eval_app.command()
def ruler(
    model: str = _MODEL,
    tasks: str = typer.Option("all", "--tasks", help="all, or a comma list of RULER task names."),
    source: str = typer.Option(
        "mmx", "--source", help="Prompts: mmx (own generators), ruler:DIR (RULER's prepare.py files), lm-eval."
    ),
    option: list[str] = _OPTION,  # noqa: B008
    max_len: str | None = _MAX_LEN,
    lengths: str | None = _LENGTHS,
    samples: int | None = typer.Option(
        None, "--samples", help="Samples per task per length.", show_default="100; ruler: every row"
    ),
    out: Path | None = _OUT,
    seed: int = _SEED,
    batch_size: str = _BATCH,
    no_answer_prefix: bool = _NO_PREFIX,
    no_prefix_reuse: bool = _NO_REUSE,
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
    tp: int | None = flags.TP,
    quantize_experts: str | None = flags.QUANTIZE_EXPERTS,
    devices: str | None = flags.DEVICES,
    json_output: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """The 13 RULER tasks (or a subset) at each length; prints a task × length score table."""
    given = dict(locals())
    chosen = resolve_tasks(given.pop("tasks"), not no_answer_prefix, given.pop("source"), option)
    json_output, quiet, devices = given.pop("json_output"), given.pop("quiet"), given.pop("devices")
    request = build_request("ruler", chosen, [("--tasks", ",".join(chosen.tasks))], **given)
    run_eval(request, json_output=json_output, quiet=quiet, devices=devices)


@eval_app.command()
def niah(
    model: str = _MODEL,
    max_len: str | None = _MAX_LEN,
    lengths: str | None = _LENGTHS,
    depths: int = typer.Option(10, "--depths", help="Needle depths from 0% to 100%; sample i sits at depth i % N."),
    spacing: str = typer.Option(
        "linear", "--spacing", help="Depth spacing: linear, or sigmoid (Kamradt's, denser at the ends)."
    ),
    option: list[str] = _OPTION,  # noqa: B008
    samples: int | None = typer.Option(None, "--samples", help="Samples per length.", show_default="one per depth"),
    judge: str | None = typer.Option(
        None, "--judge", help="Also score answers 1-10 with a model behind an OpenAI-compatible server: openai:URL."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="The judge's model name (default: first)."),
    out: Path | None = _OUT,
    seed: int = _SEED,
    batch_size: str = _BATCH,
    no_answer_prefix: bool = _NO_PREFIX,
    no_prefix_reuse: bool = _NO_REUSE,
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
    tp: int | None = flags.TP,
    quantize_experts: str | None = flags.QUANTIZE_EXPERTS,
    devices: str | None = flags.DEVICES,
    json_output: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Needle in a haystack over a depth × length grid; prints the grid and the score per length."""
    given = dict(locals())
    pairs = [f"depths={given.pop('depths')}", f"spacing={given.pop('spacing')}", *option]
    chosen = resolve_tasks(["niah"], not no_answer_prefix, "mmx", pairs)
    json_output, quiet, devices = given.pop("json_output"), given.pop("quiet"), given.pop("devices")
    judge_spec, judge_name = given.pop("judge"), given.pop("judge_model")
    given["default_samples"] = len(chosen.tasks["niah"].depths)
    flags_ = [("--depths", depths), ("--spacing", spacing), ("--judge", judge_spec), ("--judge-model", judge_name)]
    request = build_request("niah", chosen, flags_, judge=judge_spec, judge_model=judge_name, **given)
    run_eval(request, json_output=json_output, quiet=quiet, devices=devices)
