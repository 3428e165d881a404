"""Run orchestration for `mmx eval`: build samples, batch them through a backend, score, and append to a run store.

The sweep goes length by length (every task at 4k, then every task at 8k, …) so an interrupted run already holds a
complete table for its shorter lengths. A length counts every token the model reads — its BOS, a chat template's
turns — plus the answer budget: the task builds its text into what the backend's prompt layout leaves, and each
sample records the tokens the model actually read (`prompt_tokens`). Each scored sample is appended and flushed before
the next batch starts, which is what makes a rerun after Ctrl-C or SIGKILL resume exactly where the file ends: samples
are identified by (task, length, index), rebuilt from the same seed, and skipped when already on disk.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mmx.errors import MmxError
from mmx.model.backends.base import Backend, Prompt
from mmx.model.memory import is_out_of_memory, release_memory
from mmx.results.aggregate import cell_scores
from mmx.results.store import RunStore, pinned_model, sample_key
from mmx.sizes import format_size
from mmx.workflows.evaluate.progress import Progress, SilentProgress

# What a length covers, recorded in run.json: every token of the model's input (special tokens and chat template
# included) plus the answer budget.
LENGTH_COUNTS = "model_input"
MAX_REFITS = 3  # rebuilds of a cell whose prompts came out longer than their length once laid out


@dataclass(frozen=True)
class Sweep:
    """One evaluation: which tasks at which lengths, how many samples each, and the options that change the prompts.

    `tasks` maps each task name to a Task (`mmx.tasks` contract). `batch_size=None` asks the backend for one per
    length (`--batch-size auto`).
    """

    suite: str
    tasks: Mapping[str, Any]
    lengths: Sequence[int]
    samples: int
    seed: int
    answer_prefix: bool = True
    batch_size: int | None = None

    def params(self, model: Mapping[str, Any]) -> dict[str, Any]:
        """Everything that must match for a rerun on the same directory to resume rather than be refused."""
        return {
            "suite": self.suite,
            "tasks": list(self.tasks),
            "lengths": list(self.lengths),
            "samples": self.samples,
            "seed": self.seed,
            "answer_prefix": self.answer_prefix,
            "length_counts": LENGTH_COUNTS,
            "task_params": {name: task.params() for name, task in self.tasks.items()},
            "model": pinned_model(model),
        }


@dataclass
class SweepResult:
    """What a sweep left on disk (old and new records), and what it could not run."""

    records: list[dict[str, Any]]
    lengths: list[int]
    skipped_lengths: list[int]
    new_records: int = 0
    wall_s: float = 0.0
    generate_s: float = 0.0
    oom_from: int | None = None


def split_by_context(lengths: Sequence[int], max_context: int | None) -> tuple[list[int], list[int]]:
    """Lengths the model can take, and those beyond its maximum context (skipped, with a message)."""
    if not max_context:
        return list(lengths), []
    return [n for n in lengths if n <= max_context], [n for n in lengths if n > max_context]


def summary_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for `summary.csv`: one per (task, length), score on the 0..100 scale (None when nothing scored)."""
    return [{"task": c.task, "length": c.length, "n": c.n, "score": c.mean} for c in cell_scores(records).values()]


def _record(
    name: str,
    sample: Any,
    *,
    status: str,
    prompt_tokens: int | None,
    build_s: float,
    generate_s: float | None = None,
    prediction: str | None = None,
    score: float | None = None,
    batch_size: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One line of `samples.jsonl` (contract in DESIGN.md) for the sweep's task `name`; `error` only when unscored."""
    record: dict[str, Any] = {
        "task": name,
        "length": sample.length,
        "index": sample.index,
        "status": status,
        "score": score,
        "prediction": prediction,
        "references": list(sample.references),
        "prompt_hash": sample.prompt_hash,
        "prompt_tokens": prompt_tokens,
        "metadata": dict(sample.metadata),
        "timings": {"build_s": round(build_s, 6), "generate_s": None if generate_s is None else round(generate_s, 6)},
        "batch_size": batch_size,
    }
    if error is not None:
        record["error"] = error
    return record


class _SweepState:
    """The mutable part of one sweep: records so far, keys done, OOM frontier, and time spent in generate."""

    def __init__(self, store: RunStore, progress: Progress, records: list[dict[str, Any]]) -> None:
        self.store = store
        self.progress = progress
        self.records = records
        self.done = {sample_key(r) for r in records}
        self.new_records = 0
        self.generate_s = 0.0
        self.reserve: int | None = None  # tokens left for the backend's prompt layout, measured at the first cell
        # A resumed run keeps its OOM frontier: after a restart, neither the rest of a cell that ran out of memory
        # nor any longer length is tried again, exactly as in an uninterrupted run.
        self.oom_cells = {(r["task"], r["length"]) for r in records if r.get("status") == "oom"}
        self.oom_from: int | None = min((length for _, length in self.oom_cells), default=None)

    def out_of_memory(self, name: str, length: int) -> None:
        """Remember that `name` at `length` ran out of memory at batch size 1."""
        self.oom_cells.add((name, length))
        self.oom_from = length if self.oom_from is None else min(self.oom_from, length)

    def skips_for_memory(self, name: str, length: int) -> bool:
        """True when this cell is known not to fit: it ran out of memory before, or a shorter length did."""
        return (name, length) in self.oom_cells or (self.oom_from is not None and length > self.oom_from)

    def add(self, record: dict[str, Any]) -> None:
        """Append durably, then count it."""
        self.store.append_sample(record)
        self.records.append(record)
        self.done.add(sample_key(record))
        self.new_records += 1
        self.progress.advance(1)


def prompt_of(sample: Any) -> Prompt:
    """What the backend is asked: the sample's text, its answer prefix kept apart for chat layouts."""
    return Prompt(sample.prompt, sample.answer_prefix)


def read_length(backend: Any, prompt: Prompt) -> int:
    """Tokens the model reads for `prompt`, its prompt layout included (a backend outside the `Backend` base reads
    the text as it is)."""
    if isinstance(backend, Backend):
        return backend.prompt_length(prompt)
    return len(backend.tokenizer.encode(prompt))


def layout_tokens(backend: Any) -> int:
    """Tokens the backend's prompt layout adds around a prompt's text (BOS, chat turns), measured on a short one."""
    probe = Prompt("Read the text and answer the question.", " Answer:")
    return max(0, read_length(backend, probe) - len(backend.tokenizer.encode(probe)))


def build_cell(
    backend: Any, task: Any, length: int, n: int, seed: int, reserve: int
) -> tuple[list[Any], dict[int, int], int]:
    """The cell's samples, the tokens the model reads for each, and the reserve that made them fit: the task builds
    its text as if its answer budget were `reserve` tokens larger, leaving room for the prompt layout; a sample whose
    laid-out prompt still overshoots (a merge at a template seam) rebuilds the cell with more room."""
    previous: dict[int, int] | None = None
    for _ in range(MAX_REFITS + 1):
        if reserve > 0:  # same content (seeds follow the length), only the filler's extent changes
            roomier = copy.copy(task)
            roomier.max_new_tokens = task.max_new_tokens + reserve
            made = roomier.samples(backend.tokenizer, length, n, seed)
            built = [replace(s, max_new_tokens=task.max_new_tokens) for s in made]
        else:
            built = task.samples(backend.tokenizer, length, n, seed)
        reads = {s.index: read_length(backend, prompt_of(s)) for s in built}
        over = max((reads[s.index] + s.max_new_tokens - length for s in built), default=0)
        if over <= 0 or reads == previous:  # it fits, or the task's prompts do not shrink (fixed prompts)
            return built, reads, reserve
        previous, reserve = reads, reserve + over
    return built, reads, reserve - over


def _run_cell(
    backend: Any,
    sweep: Sweep,
    name: str,
    samples: list[Any],
    tokens: dict[int, int],
    build_s: float,
    state: _SweepState,
) -> None:
    """Generate and score `samples` (one task, one length) in batches; halve the batch on OOM, give up at one.

    `tokens` are the tokens the model reads per sample index; `build_s` is the cell's prompt-building time per sample.
    """
    length = samples[0].length
    max_new = max(s.max_new_tokens for s in samples)
    batch_size = sweep.batch_size or max(1, int(backend.auto_batch_size(length, max_new)))
    queue = list(samples)
    while queue:
        batch = queue[:batch_size]
        start = time.perf_counter()
        try:
            predictions = backend.generate([prompt_of(s) for s in batch], max(s.max_new_tokens for s in batch))
        except Exception as err:  # only OOM is handled here; anything else propagates unchanged
            if not is_out_of_memory(err):
                raise
            release_memory()
            if batch_size > 1:
                batch_size //= 2
                state.progress.note(f"out of memory at {format_size(length)}: retrying with batch size {batch_size}")
                continue
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            state.progress.note(f"out of memory at {format_size(length)} ({name} #{batch[0].index}): {reason}")
            state.out_of_memory(name, length)
            for i, sample in enumerate(queue):
                why = reason if i == 0 else f"not run: out of memory at {format_size(length)}"
                state.add(
                    _record(name, sample, status="oom", prompt_tokens=tokens[sample.index], build_s=build_s, error=why)
                )
            return
        elapsed = time.perf_counter() - start
        state.generate_s += elapsed
        for sample, prediction in zip(batch, predictions, strict=True):
            state.add(
                _record(
                    name,
                    sample,
                    status="ok",
                    prompt_tokens=tokens[sample.index],
                    build_s=build_s,
                    generate_s=elapsed / len(batch),
                    prediction=prediction,
                    score=float(sweep.tasks[name].score(sample, prediction)),
                    batch_size=len(batch),
                )
            )
        queue = queue[len(batch) :]


def _unrun(task_name: str, length: int, index: int, status: str, error: str) -> dict[str, Any]:
    """A record for a sample that was never built (its cell failed before prompts existed)."""
    return {
        "task": task_name,
        "length": length,
        "index": index,
        "status": status,
        "score": None,
        "prediction": None,
        "references": [],
        "prompt_hash": None,
        "prompt_tokens": None,
        "metadata": {},
        "timings": {"build_s": None, "generate_s": None},
        "batch_size": None,
        "error": error,
    }


def run_sweep(backend: Any, sweep: Sweep, store: RunStore, progress: Progress | None = None) -> SweepResult:
    """Run every (length, task) cell not yet on disk, appending each scored sample to `store`; return all records.

    `store` must already be opened (`RunStore.open`). Lengths above `backend.max_context` are skipped. After an
    out-of-memory at batch size 1, the rest of that cell and every longer length are recorded as "oom" without
    running, since memory only grows with length; other tasks at the same length still get their try.
    """
    progress = progress or SilentProgress()
    started = time.perf_counter()
    existing = store.samples()
    lengths, skipped = split_by_context(sweep.lengths, backend.max_context)
    for length in skipped:
        progress.note(
            f"skipping {format_size(length)}: longer than the model's maximum context "
            f"({format_size(backend.max_context)} tokens)"
        )
    state = _SweepState(store, progress, existing)
    cells = [(name, length) for length in lengths for name in sweep.tasks]
    planned = {(name, length, i) for name, length in cells for i in range(sweep.samples)}
    progress.begin(len(planned), len(planned & state.done))
    for name, length in cells:
        pending = [i for i in range(sweep.samples) if (name, length, i) not in state.done]
        progress.cell(name, length, sweep.samples, sweep.samples - len(pending))
        if not pending:
            continue
        if state.skips_for_memory(name, length):
            why = f"not run: out of memory at {format_size(state.oom_from)}"
            for index in pending:
                state.add(_unrun(name, length, index, "oom", why))
            continue
        task = sweep.tasks[name]
        start = time.perf_counter()
        try:
            if state.reserve is None:
                state.reserve = layout_tokens(backend)
            built, reads, state.reserve = build_cell(backend, task, length, sweep.samples, sweep.seed, state.reserve)
        except MmxError as err:  # e.g. a length too short for this task's prompt: that cell fails, the sweep goes on
            progress.note(f"{name} at {format_size(length)}: {err}")
            for index in pending:
                state.add(_unrun(name, length, index, "error", str(err)))
            continue
        build_s = (time.perf_counter() - start) / max(1, len(built))
        by_index = {s.index: s for s in built}
        _run_cell(backend, sweep, name, [by_index[i] for i in pending], reads, build_s, state)
        store.write_summary(summary_rows(state.records))
    progress.end()
    store.write_summary(summary_rows(state.records))
    return SweepResult(
        records=state.records,
        lengths=lengths,
        skipped_lengths=skipped,
        new_records=state.new_records,
        wall_s=time.perf_counter() - started,
        generate_s=state.generate_s,
        oom_from=state.oom_from,
    )
