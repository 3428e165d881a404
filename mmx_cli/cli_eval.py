"""`mmx eval ruler` and `mmx eval niah`: parse options, open the run directory, draw progress, print the score table.

The work itself is `mmx.runner.run_sweep`; this module only turns command-line text into a `Sweep`, a backend and a
run store, and the sweep's records into a table or JSON. Heavy imports (torch, the model) happen inside the commands
so `mmx --help` stays fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Table

from mmx import backend_flags as flags
from mmx.errors import MmxError
from mmx.groups import eval_app
from mmx.sizes import format_size, resolve_lengths

DEFAULT_MODEL = "mmx-mini"
DEFAULT_MAX_LEN = "128k"  # RULER's default sweep: 4k … 128k


class BarProgress:
    """Rich bars on stderr: one for the whole sweep, one for the current (task, length) cell, both with an ETA."""

    def __init__(self, console: Console) -> None:
        self.bars = RichBar(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.total_id: Any = None
        self.cell_id: Any = None

    def begin(self, total: int, done: int) -> None:
        """Start drawing; `done` samples were already on disk."""
        self.bars.start()
        self.total_id = self.bars.add_task("sweep", total=total, completed=done)

    def cell(self, task: str, length: int, total: int, done: int) -> None:
        """Replace the cell bar with one for (task, length)."""
        if self.cell_id is not None:
            self.bars.remove_task(self.cell_id)
        self.cell_id = self.bars.add_task(f"{task} @ {format_size(length)}", total=total, completed=done)

    def advance(self, count: int) -> None:
        """One more sample scored."""
        self.bars.advance(self.total_id, count)
        self.bars.advance(self.cell_id, count)

    def note(self, message: str) -> None:
        """Print above the bars, so the message stays when they go."""
        self.bars.console.print(f"warning: {message}", markup=False, highlight=False)

    def end(self) -> None:
        """Stop drawing (the bars vanish; the table follows)."""
        self.bars.stop()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def parse_batch_size(text: str) -> int | None:
    """`auto` -> None (the backend decides per length); otherwise a positive integer."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise MmxError(f"bad batch size {text!r}", "use auto or a positive integer")
    return int(text)


def model_slug(spec: str) -> str:
    """A directory-safe name for a spec: `random:tiny` -> `random-tiny`, `mmx:/ckpt/run7/` -> `mmx-run7`."""
    prefix, sep, rest = spec.partition(":")
    name = f"{prefix}-{Path(rest.rstrip('/')).name or rest}" if sep else spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def default_out(suite: str, spec: str) -> Path:
    """`runs/<suite>-<model>-<timestamp>`: a fresh directory per run unless `--out` names one (to resume)."""
    return Path("runs") / f"{suite}-{model_slug(spec)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(out: Path) -> None:
    """Refuse an output path that cannot be created or written before the model is loaded (cheap, no side effects)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and (not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK)):
        raise MmxError(f"cannot write to {out}: {probe} is not a writable directory", "choose another --out directory")


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


@dataclass(frozen=True)
class EvalRequest:
    """One `mmx eval ruler|niah` invocation, parsed: what to run, where, and the argv that resumes it."""

    suite: str
    tasks: dict[str, Any]
    model: str
    options: dict[str, Any]
    lengths: list[int]
    samples: int
    seed: int
    batch_size: int | None
    answer_prefix: bool
    out: Path
    command: list[str]


def run_eval(request: EvalRequest, *, json_output: bool, quiet: bool) -> None:
    """Load the backend, open (or resume) the run directory, run the sweep, print the table or JSON."""
    from mmx.model.backend import load_backend
    from mmx.results.store import RunStore
    from mmx.runner import SilentProgress, Sweep, run_metadata, run_sweep

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
    )
    described = backend.describe()
    out = request.out
    store = RunStore(out, on_corrupt=lambda m: _warn(f"{m} (its sample will run again)"))
    resumed = store.open(run_metadata("eval", request.command, request.suite, described, plan.params(described)))
    verb = "resuming" if resumed else "writing"
    print(f"{verb} run in {out} (resume with --out {out})", file=sys.stderr, flush=True)
    interactive = not quiet and sys.stdout.isatty() and sys.stderr.isatty()
    progress = BarProgress(Console(stderr=True)) if interactive else SilentProgress(_warn)
    try:
        result = run_sweep(backend, plan, store, progress)
    except KeyboardInterrupt:
        progress.end()
        print(f"interrupted: rerun the same command with --out {out} to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    names = list(request.tasks)
    if json_output:
        print(json.dumps(json_report(out, resumed, described, result, names), indent=2))
        return
    console = Console()
    console.print(f"{request.suite} · {described.get('name', request.model)}", markup=False, highlight=False)
    console.print(score_table(result.records, names, result.lengths))
    console.print(f"results in {out}", markup=False, highlight=False)


def build_request(suite: str, tasks: dict[str, Any], suite_flags: list[tuple[str, Any]], **given: Any) -> EvalRequest:
    """Check the options both commands share and pin down everything a rerun must repeat (lengths, --out)."""
    lengths = resolve_lengths(given["max_len"], given["lengths"], DEFAULT_MAX_LEN)
    batch_size = parse_batch_size(given["batch_size"])
    if given["samples"] < 1:
        raise MmxError(f"bad sample count {given['samples']}", "use --samples 1 or more")
    backend_flags = {name: given[name] for name in _BACKEND_FLAGS}
    options = flags.backend_options(**backend_flags)
    out = given["out"] or default_out(suite, given["model"])
    pinned = [
        ("--model", given["model"]),
        *suite_flags,
        ("--lengths", ",".join(format_size(n) for n in lengths)),
        ("--samples", given["samples"]),
        ("--seed", given["seed"]),
        ("--out", out),
        ("--batch-size", given["batch_size"]),
        ("--no-answer-prefix", given["no_answer_prefix"]),
        *((_BACKEND_FLAGS[name], value) for name, value in backend_flags.items() if value not in (None, "auto")),
    ]
    argv = ["mmx", "eval", suite]
    for flag, value in pinned:
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return EvalRequest(
        suite=suite,
        tasks=tasks,
        model=given["model"],
        options=options,
        lengths=lengths,
        samples=given["samples"],
        seed=given["seed"],
        batch_size=batch_size,
        answer_prefix=not given["no_answer_prefix"],
        out=out,
        command=argv,
    )


def _resolve_tasks(text: str, answer_prefix: bool) -> dict[str, Any]:
    """`all` (RULER's 13) or a comma list of task names -> {name: Task}; an unknown name is one error.

    Without an answer prefix the tasks fill its tokens with context, so prompts still land on the target length.
    """
    from mmx.tasks import SUITES, get_task

    every = text.strip().lower() == "all"
    names = SUITES["ruler"] if every else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise MmxError("no tasks given", "use --tasks all or a comma list, e.g. --tasks niah_single_1,vt")
    tasks = [get_task(name, answer_prefix=answer_prefix) for name in dict.fromkeys(names)]  # refuses unknown names
    return {task.name: task for task in tasks}  # a substitute (qa_1 -> synth_qa_1) runs and records under its own name


# Backend options (mmx.backend_flags) by parameter name, with their flags; --batch-size is the runner's own here.
_BACKEND_FLAGS = {
    "device": "--device",
    "dtype": "--dtype",
    "max_context": "--max-context",
    "chat_template": "--chat-template",
    "tokenizer": "--tokenizer",
    "api_model": "--api-model",
    "concurrency": "--concurrency",
    "timeout": "--timeout",
    "retries": "--retries",
}
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
    tokenizer: str | None = flags.TOKENIZER,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    timeout: float | None = flags.TIMEOUT,
    retries: int | None = flags.RETRIES,
    json_output: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """The 13 RULER tasks (or a subset) at each length; prints a task × length score table."""
    given = dict(locals())
    chosen = _resolve_tasks(given.pop("tasks"), answer_prefix=not no_answer_prefix)
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
    tokenizer: str | None = flags.TOKENIZER,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    timeout: float | None = flags.TIMEOUT,
    retries: int | None = flags.RETRIES,
    json_output: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Needle in a haystack over a depth × length grid; prints scores per length (see `mmx report` for the heatmap)."""
    from mmx.tasks import get_task

    given = dict(locals())
    task = get_task(  # checks both grid options
        "niah", depths=given.pop("depths"), spacing=given.pop("spacing"), answer_prefix=not no_answer_prefix
    )
    json_output, quiet = given.pop("json_output"), given.pop("quiet")
    given["samples"] = samples if samples is not None else depths
    request = build_request("niah", {task.name: task}, [("--depths", depths), ("--spacing", spacing)], **given)
    run_eval(request, json_output=json_output, quiet=quiet)
