"""Run orchestration for `mmx eval`: build samples, batch them through a backend, score, and append to a run store.

The sweep goes length by length (every task at 4k, then every task at 8k, …) so an interrupted run already holds a
complete table for its shorter lengths. A length counts every token the model reads — its BOS, a chat template's
turns — plus the answer budget: the task builds its text into what the backend's prompt layout leaves, and each
sample records the tokens the model actually read (`prompt_tokens`). Each scored sample is appended and flushed before
the next batch starts, which is what makes a rerun after Ctrl-C or SIGKILL resume exactly where the file ends: samples
are identified by (task, length, index), rebuilt from the same seed, and skipped when already on disk.

The samples of a cell run in the sorted order of their prompts, inside one `prefill_scope` of the backend: prompts that
begin alike are neighbours, and a backend that can (the native one) prefills their common beginning once. Each record
says how many of its prompt's tokens were prefilled and how many read from a cache another sample had filled; every
sweep appends its wall time, prefill time and those token counts to `sweeps.jsonl` in the run directory.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from mmx.errors import MmxError
from mmx.model.backends.base import Backend, PrefillLog, Prompt
from mmx.model.memory import is_out_of_memory, release_memory
from mmx.results.aggregate import cell_scores
from mmx.results.store import SWEEPS_FILE, RunStore, pinned_model, sample_key
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
    length (`--batch-size auto`). `prefix_reuse` lets the backend prefill the beginning a cell's prompts share once;
    it changes speed, not what is computed (up to rounding), so it is not part of the run's identity.
    """

    suite: str
    tasks: Mapping[str, Any]
    lengths: Sequence[int]
    samples: int
    seed: int
    answer_prefix: bool = True
    batch_size: int | None = None
    source: Mapping[str, Any] = field(default_factory=lambda: {"source": "mmx"})
    task_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    judge: Mapping[str, Any] | None = None  # the LLM judge's description, when one also scores the answers
    prefix_reuse: bool = True

    @classmethod
    def for_request(cls, request: Any, judge: Any | None = None) -> Sweep:
        """The sweep an `EvalRequest` asks for (`judge`: the `Judge` that also rates answers, if any)."""
        return cls(
            request.suite,
            request.tasks,
            request.lengths,
            request.samples,
            request.seed,
            answer_prefix=request.answer_prefix,
            batch_size=request.batch_size,
            source=request.source,
            task_options=request.task_options,
            judge=judge.describe() if judge else None,
            prefix_reuse=request.prefix_reuse,
        )

    def params(self, model: Mapping[str, Any]) -> dict[str, Any]:
        """Everything that must match for a rerun on the same directory to resume rather than be refused."""
        return {
            "suite": self.suite,
            "tasks": list(self.tasks),
            "lengths": list(self.lengths),
            "samples": self.samples,
            "seed": self.seed,
            "answer_prefix": self.answer_prefix,
            "source": dict(self.source),
            "task_options": {name: dict(opts) for name, opts in self.task_options.items()},
            **({"judge": dict(self.judge)} if self.judge else {}),
            "length_counts": LENGTH_COUNTS,
            "task_params": {name: task.params() for name, task in self.tasks.items()},
            "model": pinned_model(model),
        }


@dataclass
class Timing:
    """Where one sweep's time went, over the samples it ran: wall time, seconds in `generate` and the part of them
    spent prefilling, and prompt tokens prefilled against read from a shared prefix (None: the backend cannot tell)."""

    wall_s: float = 0.0
    generate_s: float = 0.0
    prefill_s: float | None = None
    prompt_tokens: int = 0
    prefilled_tokens: int | None = None
    read_tokens: int | None = None

    def add(self, elapsed: float, tokens: int, log: PrefillLog | None) -> None:
        """Count one `generate` call over prompts of `tokens` tokens in all, with its backend's prefill log."""
        self.generate_s += elapsed
        self.prompt_tokens += tokens
        if log is not None and log.prefill_s is not None:
            self.prefill_s = (self.prefill_s or 0.0) + log.prefill_s
        if log is not None and log.prefilled:
            self.prefilled_tokens = (self.prefilled_tokens or 0) + sum(log.prefilled)
            self.read_tokens = (self.read_tokens or 0) + sum(log.read)


@dataclass
class SweepResult:
    """What a sweep left on disk (old and new records), what it could not run, and where this sweep's time went."""

    records: list[dict[str, Any]]
    lengths: list[int]
    skipped_lengths: list[int]
    new_records: int = 0
    timing: Timing | None = None
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
    judge_score: int | None = None,
    prefill: tuple[int, int, float | None] | None = None,
) -> dict[str, Any]:
    """One line of `samples.jsonl` (fields: docs/formats.md) for the sweep task `name`; `error` only when unscored.

    `prefill` is (tokens prefilled, tokens read from a shared prefix, prefill seconds) when the backend said."""
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
    if prefill is not None:
        record["prefilled_tokens"], record["read_tokens"] = prefill[0], prefill[1]
        if prefill[2] is not None:
            record["timings"]["prefill_s"] = round(prefill[2], 6)
    if error is not None:
        record["error"] = error
    if judge_score is not None:
        record["judge_score"] = judge_score
    return record


class _SweepState:
    """The mutable part of one sweep: records so far, keys done, OOM frontier, and time spent in generate."""

    def __init__(
        self, store: RunStore, progress: Progress, records: list[dict[str, Any]], judge: Any | None = None
    ) -> None:
        self.judge = judge
        self.store = store
        self.progress = progress
        self.records = records
        self.done = {sample_key(r) for r in records}
        self.new_records = 0
        self.timing = Timing()
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


def _scope(backend: Any, prompts: list[str], reuse: bool) -> AbstractContextManager[PrefillLog | None]:
    """The backend's prefill scope over a cell's prompts; none for an object that is not a `Backend` subclass."""
    return backend.prefill_scope(prompts, reuse) if isinstance(backend, Backend) else nullcontext(None)


def _prefill_of(log: PrefillLog | None, at: int, batch: int) -> tuple[int, int, float | None] | None:
    """(prefilled, read, seconds) of prompt `at` of the last `generate` call of `batch` prompts, from its log."""
    if log is None or len(log.prefilled) != batch:
        return None
    seconds = None if log.prefill_s is None else log.prefill_s / batch
    return log.prefilled[at], log.read[at], seconds


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

    Samples go in the sorted order of their prompts, so that batches (and the prompts within one) that share a
    beginning follow each other inside the backend's prefill scope. `tokens` are the tokens the model reads per
    sample index; `build_s` is the cell's prompt-building time per sample.
    """
    length = samples[0].length
    max_new = max(s.max_new_tokens for s in samples)
    queue = sorted(samples, key=lambda s: str(prompt_of(s)))
    with _scope(backend, [prompt_of(s) for s in queue], sweep.prefix_reuse) as log:
        batch_size = sweep.batch_size or max(1, int(backend.auto_batch_size(length, max_new)))
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
                    where = format_size(length)
                    state.progress.note(f"out of memory at {where}: retrying with batch size {batch_size}")
                    continue
                _record_oom(name, length, queue, tokens, build_s, err, state)
                return
            elapsed = time.perf_counter() - start
            state.timing.add(elapsed, sum(tokens[s.index] for s in batch), log)
            ratings = _judged(state.judge, batch, predictions)
            for at, (sample, prediction) in enumerate(zip(batch, predictions, strict=True)):
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
                        judge_score=ratings[at],
                        prefill=_prefill_of(log, at, len(batch)),
                    )
                )
            queue = queue[len(batch) :]


def _record_oom(
    name: str, length: int, queue: list[Any], tokens: dict[int, int], build_s: float, err: Exception, state: _SweepState
) -> None:
    """Record the rest of a cell as out of memory (at batch size 1), and remember the frontier."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    state.progress.note(f"out of memory at {format_size(length)} ({name} #{queue[0].index}): {reason}")
    state.out_of_memory(name, length)
    for i, sample in enumerate(queue):
        why = reason if i == 0 else f"not run: out of memory at {format_size(length)}"
        state.add(_record(name, sample, status="oom", prompt_tokens=tokens[sample.index], build_s=build_s, error=why))


def _judged(judge: Any | None, samples: list[Any], predictions: list[str]) -> list[int | None]:
    """The judge's 1-10 ratings of a batch (reference: the needle sentence, as Kamradt's harness), or Nones."""
    if judge is None:
        return [None] * len(samples)
    questions = [str(s.metadata.get("question", "")) for s in samples]
    references = [str(s.metadata.get("needle") or s.references[0]) for s in samples]
    return judge.rate(questions, references, predictions)


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


def run_sweep(
    backend: Any,
    sweep: Sweep,
    store: RunStore,
    progress: Progress | None = None,
    *,
    judge: Any | None = None,
    share: Callable[[str, int, int], bool] | None = None,
) -> SweepResult:
    """Run every (length, task) cell not yet on disk, appending each scored sample to `store`; return all records.

    `store` must already be opened (`RunStore.open`). Lengths above `backend.max_context` are skipped. After an
    out-of-memory at batch size 1, the rest of that cell and every longer length are recorded as "oom" without
    running, since memory only grows with length; other tasks at the same length still get their try. A `judge`
    (`mmx.workflows.evaluate.judge.Judge`) also rates each answer; its score is recorded beside the metric's. `share`
    (task, length, index) -> bool limits the run to the samples this process owns in a data-parallel job
    (`mmx.workflows.evaluate.distributed`); `store` is then its proxy for the job's one writer.
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
    state = _SweepState(store, progress, existing, judge)
    cells = [(name, length) for length in lengths for name in sweep.tasks]
    planned = {(name, length, i) for name, length in cells for i in range(sweep.samples)}
    progress.begin(len(planned), len(planned & state.done))
    for name, length in cells:
        pending = [
            i
            for i in range(sweep.samples)
            if (name, length, i) not in state.done and (share is None or share(name, length, i))
        ]
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
    state.timing.wall_s = time.perf_counter() - started
    if state.new_records and isinstance(store, RunStore):  # a data-parallel rank's proxy store keeps no sweep log
        _log_sweep(store, sweep, state)
    return SweepResult(
        records=state.records,
        lengths=lengths,
        skipped_lengths=skipped,
        new_records=state.new_records,
        timing=state.timing,
        oom_from=state.oom_from,
    )


def _log_sweep(store: RunStore, sweep: Sweep, state: _SweepState) -> None:
    """Append this sweep's timing to `sweeps.jsonl`: a resumed run keeps one line per sweep that added samples."""
    line = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "new_samples": state.new_records,
        "prefix_reuse": sweep.prefix_reuse,
        **{key: round(v, 6) if isinstance(v, float) else v for key, v in asdict(state.timing).items()},
    }
    with (store.dir / SWEEPS_FILE).open("a") as fh:
        fh.write(json.dumps(line) + "\n")
