"""Needle in a haystack, Kamradt style: one needle sentence in essay prose, swept over a depth × length grid.

Sample `i` puts the needle at depth index `i % depths` of a linear or sigmoid grid from 0% to 100% of the haystack's
tokens, moved back to the end of the previous sentence (at 100%: after the last whole sentence, before the cut-off
remainder that makes the length exact). The needle, its question and the answer can
be set; by default each sample gets its own needle from a small template ("The best thing to do in {town} is to
{activity}."), so different indices test different facts. Scoring is a containment check of the answer.
"""

from __future__ import annotations

import math
import random
from typing import Any

from mmx.errors import MmxError
from mmx.tasks.base import Task, too_short_unless
from mmx.tasks.corpus import load_corpus
from mmx.tasks.fit import Budget, Draft
from mmx.tasks.haystack import essay_haystack, weave
from mmx.tasks.prose import place_names
from mmx.tasks.tokens import TokenCounter

INSTRUCTION = "Read the document below, then answer the question that follows it using only the document."
QUESTION = "\n\nQuestion: {question}\n"
ANSWER_PREFIX = "Answer:"
NEEDLE = "The best thing to do in {town} is to {activity}."
NEEDLE_QUESTION = "What is the best thing to do in {town}?"
ACTIVITIES = (
    "walk along the old canal at sunrise",
    "ride the night ferry to the lighthouse",
    "taste the smoked cheese at the harbour market",
    "listen to the brass band in the square",
    "climb the clock tower before noon",
    "rent a rowing boat on the mill pond",
    "watch the glassblowers at the west gate",
    "picnic in the walled rose garden",
    "swim in the cold spring below the bridge",
    "hunt for fossils in the chalk quarry",
    "share a pot of mint tea with the ferryman",
    "fly a kite on the windy ridge",
)
SIGMOID_STEEPNESS = 0.1  # Kamradt's logistic over 0-100: L = 100, x0 = 50, k = 0.1


def depth_grid(count: int, spacing: str) -> list[float]:
    """`count` depths in percent from 0 to 100, as Kamradt's harness spaces them: evenly ("linear"), or each point
    of the even grid passed through a logistic and rounded to 3 decimals, 0 and 100 kept ("sigmoid", denser near
    both ends)."""
    if count < 1:
        raise MmxError(f"depths must be at least 1, got {count}", "use e.g. depths=10")
    if spacing not in ("linear", "sigmoid"):
        raise MmxError(f"unknown depth spacing {spacing!r}", "use linear or sigmoid")
    if count == 1:
        return [50.0]
    xs = [100 * i / (count - 1) for i in range(count)]
    if spacing == "linear":
        return [round(x, 2) for x in xs]

    def logistic(x: float) -> float:
        if x in (0.0, 100.0):
            return x
        return round(100 / (1 + math.exp(-SIGMOID_STEEPNESS * (x - 50))), 3)

    return [logistic(x) for x in xs]


class Niah(Task):
    """Kamradt-style needle retrieval over the essay haystack (built-in essays unless `corpus` is given)."""

    name = "niah"
    category = "retrieval"
    metric = "all"
    max_new_tokens = 64

    def __init__(
        self,
        *,
        depths: int = 10,
        spacing: str = "linear",
        needle: str | None = None,
        question: str | None = None,
        answer: str | None = None,
        corpus: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        custom = (needle, question, answer)
        if any(custom) and not all(x and x.strip() for x in custom):
            raise MmxError("needle, question and answer go together", "give all three, or none for the default needles")
        if answer and needle and answer.lower() not in needle.lower():
            raise MmxError("the answer does not occur in the needle", "the needle sentence must contain the answer")
        self.needle, self.question, self.answer = needle, question, answer
        self.depths = depth_grid(depths, spacing)
        self.spacing = spacing
        self.haystack = essay_haystack(load_corpus(corpus))

    def describe(self) -> dict[str, Any]:
        needle = {"needle": self.needle, "question": self.question, "answer": self.answer} if self.needle else {
            "needle": NEEDLE, "question": NEEDLE_QUESTION, "answer": "{activity}"}  # fmt: skip
        return {"depths": self.depths, "spacing": self.spacing, **needle, "haystack_params": self.haystack.params}

    def _needle(self, rng: random.Random) -> tuple[str, str, str]:
        if self.needle and self.question and self.answer:
            return self.needle, self.question, self.answer
        town, activity = rng.choice(place_names()), rng.choice(ACTIVITIES)
        return NEEDLE.format(town=town, activity=activity), NEEDLE_QUESTION.format(town=town), activity

    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        needle, question_text, answer = self._needle(rng)
        depth_index = budget.index % len(self.depths)
        depth = self.depths[depth_index]
        question = QUESTION.format(question=question_text)
        prefix = self.answer_prefix(ANSWER_PREFIX)
        fixed = counter.once(INSTRUCTION) + counter.once(question) + counter.once(prefix)
        too_short_unless(budget.aim, fixed + counter.once(" " + needle) + 16)
        woven = weave(self.haystack, rng, counter, budget.aim - fixed, [(depth / 100, needle)], budget.slack)
        filler = max(woven.filler_tokens, 1)
        metadata = {
            "depth": depth,
            "depth_index": depth_index,
            "needle_offset": woven.offsets[0],
            "placed_depth": round(100 * min(woven.offsets[0] / filler, 1.0), 2),
            "needle": needle,
            "question": question_text,
        }
        return Draft([INSTRUCTION, *woven.parts, question], prefix, [answer], metadata)
