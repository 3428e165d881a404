"""What every task shares: seeding, exact-length fitting, the answer prefix switch, scoring and the `Task` interface."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from typing import Any

from mmx.errors import MmxError
from mmx.sizes import format_size
from mmx.tasks.fit import Budget, Draft, TooShort, fit, tolerance
from mmx.tasks.sample import Sample
from mmx.tasks.scoring import METRICS
from mmx.tasks.tokens import TokenCounter, Tokenizer, counter_for

# The longest prompt mmx builds: well past the longest context any MiniMax model takes (10.24M positions), and short
# enough that building one stays within a machine's memory (a prompt is held in memory as text and token ids).
MAX_LENGTH = 1 << 24


def sample_seed(task: str, length: int, index: int, seed: int) -> int:
    """A 64-bit seed from the sample's identity, stable across Python versions and processes (unlike `hash`)."""
    digest = hashlib.sha256(f"{task}|{length}|{index}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Task(ABC):
    """A generator of exact-length samples plus the metric that scores them.

    Subclasses set `name`, `category`, `metric` ("all" or "part") and `max_new_tokens`, and implement `draft`, which
    builds one prompt aiming at a token budget. `samples` and `score` are the contract the runners use.
    """

    name: str
    category: str
    metric: str
    max_new_tokens: int

    def __init__(self, *, answer_prefix: bool = True, max_new_tokens: int | None = None) -> None:
        self.use_answer_prefix = answer_prefix
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise MmxError(f"max_new_tokens must be positive, got {max_new_tokens}", "use e.g. 32 or 128")
            self.max_new_tokens = max_new_tokens

    @abstractmethod
    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        """One prompt whose summed piece counts (prompt + answer prefix) come as close to `budget.aim` as possible
        from below, within `budget.slack`. Raise `TooShort` when the fixed parts alone do not fit."""

    def describe(self) -> dict[str, Any]:
        """Task-specific parameters for `params()` (haystack, key and value kinds, counts, corpus hash...)."""
        return {}

    def params(self) -> dict[str, Any]:
        """Everything that decides this task's prompts and scores; recorded in run.json, so a resume must match it."""
        return {
            "task": self.name,
            "category": self.category,
            "metric": f"string_match_{self.metric}",
            "max_new_tokens": self.max_new_tokens,
            "answer_prefix": self.use_answer_prefix,
            **self.describe(),
        }

    def answer_prefix(self, text: str) -> str:
        """The prefix that starts the model's reply, or nothing when the run turned it off."""
        return text if self.use_answer_prefix else ""

    def sample(self, tokenizer: Tokenizer, length: int, index: int, seed: int = 0) -> Sample:
        """Sample `index` at `length` tokens (prompt + answer prefix + answer budget) in `tokenizer`."""
        if length > MAX_LENGTH:
            raise MmxError(
                f"length {format_size(length)} is longer than mmx builds prompts ({format_size(MAX_LENGTH)} tokens)",
                f"pick a length up to {format_size(MAX_LENGTH)}",
            )
        limit = length - self.max_new_tokens
        slack = tolerance(length)
        counter = counter_for(tokenizer)
        state = sample_seed(self.name, length, index, seed)
        try:
            target = Budget(limit, slack, length, index, seed)
            draft, tokens = fit(lambda budget: self.draft(random.Random(state), counter, budget), counter, target)
        except TooShort as err:
            need = err.needed + self.max_new_tokens
            need += max(16, need // 10)  # content is drawn per length, so the exact minimum moves a little
            raise MmxError(
                f"length {format_size(length)} is too short for task {self.name}",
                f"this tokenizer needs at least {need} tokens for it; pick a longer length",
            ) from None
        return Sample(
            task=self.name,
            length=length,
            index=index,
            prompt=draft.prompt,
            answer_prefix=draft.answer_prefix,
            references=draft.references,
            max_new_tokens=self.max_new_tokens,
            metadata={**draft.metadata, "prompt_tokens": tokens},
        )

    def samples(self, tokenizer: Tokenizer, length: int, n: int, seed: int = 0) -> list[Sample]:
        """Samples 0..n-1; each is independent of `n`, so a run can be extended or resumed sample by sample."""
        return [self.sample(tokenizer, length, i, seed) for i in range(n)]

    def score(self, sample: Sample, prediction: str) -> float:
        """The sample's score in [0, 1] by this task's metric."""
        return METRICS[self.metric](prediction, sample.references)


def too_short_unless(aim: int, needed: int) -> None:
    """Raise `TooShort` when a draft's fixed parts (`needed` tokens) do not fit in `aim`."""
    if aim < needed:
        raise TooShort(needed)
