"""RULER's eight needle-in-a-haystack retrieval tasks, as one table of parameters and one generator.

A needle reads "One of the special magic {numbers|uuids} for {key} is: {value}." Needles go at distinct depths drawn
from 40 evenly spaced points between 0% and 100% of the haystack, at a line start (noise and needle haystacks) or
after a sentence (essays). Multi-key tasks add distractor needles under other keys; the needle haystack is nothing
but distractors, so every line looks like the answer except the one with the queried key.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from mmx.tasks.base import Task, too_short_unless
from mmx.tasks.corpus import load_corpus
from mmx.tasks.fit import Budget, Draft
from mmx.tasks.haystack import Haystack, essay_haystack, line_haystack, noise_haystack, weave
from mmx.tasks.tokens import TokenCounter
from mmx.tasks.values import KINDS, Distinct

DEPTH_POINTS = 40  # RULER draws needle depths from 40 evenly spaced points, 0% to 100%
MIN_FILLER = 16  # a haystack should be at least a few words long, whatever the tokenizer


@dataclass(frozen=True)
class NiahSpec:
    """One row of RULER's table: haystack, key and value kinds, and how many keys, values per key and queries."""

    haystack: str  # noise | essay | needle
    keys: str  # words | uuids
    values: str  # numbers | uuids
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


RULER_NIAH: dict[str, NiahSpec] = {
    "niah_single_1": NiahSpec("noise", "words", "numbers"),
    "niah_single_2": NiahSpec("essay", "words", "numbers"),
    "niah_single_3": NiahSpec("essay", "words", "uuids"),
    "niah_multikey_1": NiahSpec("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NiahSpec("needle", "words", "numbers"),
    "niah_multikey_3": NiahSpec("needle", "uuids", "uuids"),
    "niah_multivalue": NiahSpec("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NiahSpec("essay", "words", "numbers", num_keys=4, num_queries=4),
}

INSTRUCTION = (
    "Some special magic {kind} are hidden in the long text below. Memorize each one together with the key it belongs "
    "to; you will be asked about them after the text."
)
QUESTION = "\n\nQuestion: What are all the special magic {kind} for {keys} in the text above?\n"
ANSWER_PREFIX = "Answer: The special magic {kind} for {keys} in the text above are:"


def needle_text(kind: str, key: str, value: str) -> str:
    return f"One of the special magic {kind} for {key} is: {value}."


def join_keys(keys: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


class NiahTask(Task):
    """One of RULER's retrieval tasks; `corpus` picks the essay haystack's text (built-in essays by default)."""

    category = "retrieval"
    metric = "all"
    max_new_tokens = 128

    def __init__(self, name: str, spec: NiahSpec, *, corpus: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.name = name
        self.spec = spec
        self.haystack: Haystack | None = None  # the needle haystack is made per sample, around its answers
        if spec.haystack == "noise":
            self.haystack = noise_haystack()
        elif spec.haystack == "essay":
            self.haystack = essay_haystack(load_corpus(corpus))

    def describe(self) -> dict[str, Any]:
        haystack = self.haystack.params if self.haystack else {"lines": "distractor needles"}
        return {**asdict(self.spec), "haystack_params": haystack, "depth_points": DEPTH_POINTS}

    def _distractors(self, answer_keys: list[str], answer_values: list[str]) -> Haystack:
        """Endless distractor needles: fresh keys (never an answer's key), values never equal to an answer."""

        def lines(rng: random.Random) -> Iterator[str]:
            keys = Distinct(KINDS[self.spec.keys], answer_keys)
            values = Distinct(KINDS[self.spec.values], answer_values)
            while True:
                yield needle_text(self.spec.values, keys(rng), values(rng))

        return line_haystack(lines)

    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        aim, slack = budget.aim, budget.slack
        spec = self.spec
        keys = Distinct(KINDS[spec.keys]).take(rng, spec.num_keys)
        values = Distinct(KINDS[spec.values]).take(rng, spec.num_keys * spec.num_values)
        needles = [(key, values[k * spec.num_values + v]) for k, key in enumerate(keys) for v in range(spec.num_values)]
        points = rng.sample(range(DEPTH_POINTS), len(needles))
        depths = [p / (DEPTH_POINTS - 1) for p in points]
        queried = keys[: spec.num_queries]
        references = [value for key, value in needles if key in queried]
        haystack = self.haystack or self._distractors(keys, values)

        kind, key_list = spec.values, join_keys(queried)
        head = INSTRUCTION.format(kind=kind) + haystack.opening
        question = QUESTION.format(kind=kind, keys=key_list)
        prefix = self.answer_prefix(ANSWER_PREFIX.format(kind=kind, keys=key_list))
        fixed = counter.once(head) + counter.once(question) + counter.once(prefix)
        texts = [needle_text(kind, key, value) for key, value in needles]
        too_short_unless(aim, fixed + sum(counter.once(t) for t in texts) + len(texts) + MIN_FILLER)
        woven = weave(haystack, rng, counter, aim - fixed, list(zip(depths, texts, strict=True)), slack)
        metadata = {
            "depths": [round(100 * d, 2) for d in depths],
            "needle_offsets": woven.offsets,
            "haystack_tokens": woven.tokens,
            "keys": queried,
        }
        return Draft([head, *woven.parts, question], prefix, references, metadata)
