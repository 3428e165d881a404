"""An LLM judge for needle-in-a-haystack answers, scoring 1-10 as Kamradt's harness does, beside containment.

Kamradt's NIAH asks a judge model to rate how well a response matches the reference (the needle) on a 1-10 scale
with anchors at 1, 3, 5, 7 and 10, and MiniMax-01 draws its 4M-token heatmap on that scale. Here any model behind an
OpenAI-compatible server can judge (`--judge openai:URL`); the rubric is written in mmx's own words, greedy, and the
rating is read from the reply. The judge's score never replaces the containment score: a run records both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

JUDGE_PROMPT = """You grade answers to a reading question. Compare the RESPONSE with the REFERENCE answer and rate \
how well the response gives the reference's information, on a scale of 1 to 10:
1 = unrelated to the reference; 3 = touches on it but gets it wrong; 5 = partly right, with errors;
7 = right but missing a detail; 10 = fully right and matching the reference.
Reply with the number only, written as [[N]].

QUESTION: {question}
REFERENCE: {reference}
RESPONSE: {response}

Rating: [["""
_RATING = re.compile(r"\b(10|[1-9])\b")
MAX_TOKENS = 8


def parse_rating(reply: str) -> int | None:
    """The first whole number 1-10 in the judge's reply (it was asked for `[[N]]`; the prompt opens the brackets)."""
    found = _RATING.search(reply)
    return int(found.group(1)) if found else None


class Judge:
    """A judge model behind an OpenAI-compatible server; `rate` scores a batch of answers."""

    def __init__(self, spec: str, model: str | None = None) -> None:
        from mmx.model.backends.base import load_backend

        self.spec = spec
        options: dict[str, Any] = {"tokenizer": "byte"}  # the judge's prompts are short: no length bookkeeping
        if model:
            options["model"] = model
        self.backend = load_backend(spec, **options)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "model": getattr(self.backend, "model", None), "scale": "1-10", "prompt": "mmx"}

    def rate(self, questions: Sequence[str], references: Sequence[str], responses: Sequence[str]) -> list[int | None]:
        prompts = [
            JUDGE_PROMPT.format(question=q, reference=r, response=a.strip())
            for q, r, a in zip(questions, references, responses, strict=True)
        ]
        return [parse_rating(reply) for reply in self.backend.generate(prompts, MAX_TOKENS)]
