"""Training documents generated offline by the evaluation tasks themselves, with seeds no evaluation uses.

Document `i` of a run is a pure function of (mix, seed, row length, i): groups of `GROUP` consecutive documents come
from one `Task.samples(tokenizer, length, GROUP, seed)` call, with the task drawn by weight and the length drawn
log-uniformly between `min_len` and the row length. Task seeds live at 2^48 and above; evaluation seeds are small
integers, so no training prompt is an evaluation prompt. Generation runs in worker processes ahead of the trainer.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context

from mmx.errors import MmxError
from mmx.model.tokenizer import ByteTokenizer

from .packing import Document

GROUP = 10  # samples per generator call: NIAH cycles its depths over sample indices, so a group spans all of them
TRAIN_SEED_BASE = 1 << 48


@dataclass(frozen=True)
class DataMix:
    """Which tasks make the documents, with what weight, and how short a document may be."""

    weights: dict[str, float]
    min_len: int = 512
    task_options: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"weights": dict(self.weights), "min_len": self.min_len, "task_options": dict(self.task_options)}


def parse_mix(text: str, min_len: int) -> DataMix:
    """`'ruler'`, `'niah_single_1=3,vt=1'` or `'ruler,niah=2'`: task names or suite names, with optional weights."""
    from mmx.tasks import SUITES, list_tasks

    known = set(list_tasks())
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, raw = part.partition("=")
        try:
            weight = float(raw) if raw else 1.0
        except ValueError:
            raise MmxError(f"bad weight in {part!r}", "write NAME or NAME=WEIGHT, e.g. niah_single_1=3") from None
        if weight <= 0:
            raise MmxError(f"weight of {name!r} must be positive", "drop the task instead of giving it weight 0")
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


@lru_cache(maxsize=32)
def _task(name: str, options: tuple[tuple[str, object], ...]):  # one task object per worker process
    from mmx.tasks import get_task

    return get_task(name, **dict(options))


def _group_plan(mix: DataMix, seed: int, group: int, max_len: int) -> tuple[str, int, int]:
    """(task, length, task seed) of a group: drawn from its own RNG, so any group can be rebuilt alone."""
    rng = random.Random(f"mmx-train:{seed}:{group}")
    names = sorted(mix.weights)
    task = rng.choices(names, weights=[mix.weights[n] for n in names])[0]
    low = min(mix.min_len, max_len)
    length = int(round(math.exp(rng.uniform(math.log(low), math.log(max_len)))))
    return task, length, TRAIN_SEED_BASE + (seed << 32) + group


def make_group(mix: DataMix, seed: int, group: int, max_len: int) -> list[Document]:
    """The `GROUP` documents of one group: BOS, prompt + answer prefix, answer, EOS (at most `max_len` + 2 tokens)."""
    task_name, length, task_seed = _group_plan(mix, seed, group, max_len)
    options = tuple(sorted(mix.task_options.get(task_name, {}).items()))
    task = _task(task_name, options)
    tok = ByteTokenizer()
    docs = []
    for sample in task.samples(tok, length, GROUP, task_seed):
        context = [tok.bos_id] + tok.encode(sample.prompt + sample.answer_prefix)
        answer = tok.encode(answer_text(list(sample.references), getattr(task, "metric", "all") == "all"))
        docs.append(Document(context + answer[: sample.max_new_tokens] + [tok.eos_id], answer_start=len(context)))
    return docs


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

    def fetcher(self, seq_len: int):
        """A `Packer` fetch function for rows of `seq_len` tokens (documents of at most seq_len - 2 task tokens)."""
        max_len = seq_len - 2

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
