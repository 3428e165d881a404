"""Training documents generated offline by the evaluation tasks themselves, with seeds no evaluation uses.

Document `i` of a run is a pure function of (mix, seed, row length, i): its own RNG draws the task by weight and the
task length log-uniformly between `min_len` and the row length, then `Task.sample(tokenizer, length, index=i,
seed=2^48 + seed)` builds it. Evaluation seeds are small integers and every sample's content is a hash of (task,
length, index, seed), so no training prompt is an evaluation prompt. Work is handed to worker processes in groups of
`GROUP` documents, generated ahead of the trainer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context

from mmx.errors import MmxError
from mmx.model.tokenizer import ByteTokenizer
from mmx.workflows.train import drill, recall
from mmx.workflows.train.packing import Document

GROUP = 16  # documents per unit of work handed to a generator process
TRAIN_SEED_BASE = 1 << 48
# Sources that are not evaluation tasks: name -> document builder (rng, length, bos, eos).
DENSE_SOURCES: dict[str, Callable[[random.Random, int, int, int], Document]] = {
    recall.NAME: recall.recall_document,
    drill.NAME: drill.drill_document,
}


@dataclass(frozen=True)
class DataMix:
    """Which tasks make the documents, with what weight, and how short a document may be."""

    weights: dict[str, float]
    min_len: int = 1024
    task_options: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"weights": dict(self.weights), "min_len": self.min_len, "task_options": dict(self.task_options)}


def parse_mix(text: str, min_len: int) -> DataMix:
    """`'ruler'`, `'niah_single_1=3,vt=1'` or `'ruler,niah=2,drill'`: task, suite or dense-source names (`recall`:
    associative recall, see `recall.py`; `drill`: needle drills, see `drill.py`), with optional weights."""
    from mmx.tasks import SUITES, list_tasks

    known = {*list_tasks(), *DENSE_SOURCES}
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, raw = part.partition("=")
        try:
            weight = float(raw) if raw else 1.0
        except ValueError:
            raise MmxError(f"bad weight in {part!r}", "write NAME or NAME=WEIGHT, e.g. niah_single_1=3") from None
        if not (weight > 0 and math.isfinite(weight)):
            hint = "give a positive, finite weight (drop the task instead of giving it weight 0)"
            raise MmxError(f"weight of {name!r} must be a positive number, got {raw}", hint)
        members = SUITES.get(name, [name])
        for task in members:
            if task not in known:
                raise MmxError(f"unknown task {task!r}", f"known tasks: {', '.join(sorted(known))}")
            weights[task] = weights.get(task, 0.0) + weight / len(members)
    if not weights:
        raise MmxError("no training tasks given", "pass --data with task or suite names, e.g. --data ruler,niah")
    return DataMix(weights, min_len)


def answer_text(references: list[str], match_all: bool) -> str:
    """What the model is taught to say after the answer prefix: every reference, or the first where one suffices."""
    shown = references if match_all else references[:1]
    return " " + ", ".join(shown) + "."


@lru_cache(maxsize=64)
def _task(name: str, options: tuple[tuple[str, object], ...]):  # one task object per process
    from mmx.tasks import get_task

    return get_task(name, **dict(options))


def document_plan(mix: DataMix, seed: int, index: int, max_len: int) -> tuple[str, int]:
    """(task, length) of document `index`, from its own RNG, so any document can be rebuilt alone."""
    rng = random.Random(f"mmx-train:{seed}:{index}")
    names = sorted(mix.weights)
    task = rng.choices(names, weights=[mix.weights[n] for n in names])[0]
    low = min(mix.min_len, max_len)
    return task, int(round(math.exp(rng.uniform(math.log(low), math.log(max_len)))))


def make_document(mix: DataMix, seed: int, index: int, max_len: int) -> Document:
    """BOS, prompt + answer prefix, the answer, EOS: at most `max_len` + 2 tokens, the layout the native backend reads.

    A length too short for the drawn task is doubled (up to `max_len`) until the task fits.
    """
    task_name, length = document_plan(mix, seed, index, max_len)
    tok = ByteTokenizer()
    if task_name in DENSE_SOURCES:
        rng = random.Random(f"mmx-{task_name}:{seed}:{index}")
        return DENSE_SOURCES[task_name](rng, length, tok.bos_id, tok.eos_id)
    task = _task(task_name, tuple(sorted(mix.task_options.get(task_name, {}).items())))
    while True:
        try:
            sample = task.sample(tok, length, index, TRAIN_SEED_BASE + seed)
            break
        except MmxError:
            if length >= max_len:
                raise
            length = min(max_len, 2 * length)
    context = [tok.bos_id] + tok.encode(sample.prompt + sample.answer_prefix)
    answer = tok.encode(answer_text(list(sample.references), task.metric == "all"))[: sample.max_new_tokens]
    return Document(context + answer + [tok.eos_id], answer_start=len(context))


def make_group(mix: DataMix, seed: int, group: int, max_len: int) -> list[Document]:
    """Documents group·GROUP … group·GROUP + GROUP − 1."""
    return [make_document(mix, seed, i, max_len) for i in range(group * GROUP, (group + 1) * GROUP)]


class DocumentStream:
    """Documents by index, generated `prefetch` groups ahead in `workers` processes (in-process when 0)."""

    def __init__(self, mix: DataMix, seed: int, workers: int = 0, prefetch: int = 16) -> None:
        self.mix = mix
        self.seed = seed
        self.prefetch = prefetch
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 else None
        self._pending: dict[tuple[int, int], Future[list[Document]]] = {}
        self._ready: dict[tuple[int, int], list[Document]] = {}

    def _submit(self, group: int, max_len: int) -> None:
        key = (group, max_len)
        if key in self._ready or key in self._pending or self._pool is None:
            return
        self._pending[key] = self._pool.submit(make_group, self.mix, self.seed, group, max_len)

    def _group(self, group: int, max_len: int) -> list[Document]:
        key = (group, max_len)
        if key not in self._ready:
            future = self._pending.pop(key, None)
            self._ready[key] = future.result() if future else make_group(self.mix, self.seed, group, max_len)
        return self._ready[key]

    def fetcher(self, seq_len: int) -> Callable[[list[int]], list[Document]]:
        """A `Packer` fetch function for rows of `seq_len` tokens (documents of at most seq_len - 2 task tokens)."""
        max_len = seq_len - 2
        for key in [k for k in self._pending if k[1] != max_len]:  # work for the previous stage's rows
            self._pending.pop(key).cancel()

        def fetch(indices: list[int]) -> list[Document]:
            if not indices:
                return []
            last = max(indices) // GROUP
            for group in range(last, last + self.prefetch):
                self._submit(group, max_len)
            docs = [self._group(i // GROUP, max_len)[i % GROUP] for i in indices]
            low = min(indices) // GROUP
            for key in [k for k in self._ready if k[0] < low]:  # groups behind the packer are never read again
                del self._ready[key]
            return docs

        return fetch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
