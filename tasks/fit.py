"""Exact length control: draft a prompt from summed piece counts, encode it once, correct and redraft if needed.

A task's draft function receives a token budget (`aim`) for `prompt + answer_prefix` and returns a `Draft` whose summed
piece counts come as close to `aim` as its content allows, from below. For tokenizers whose pieces add up exactly (the
byte tokenizer, byte-level BPE) the first draft already lands; for others the measured error moves the aim and the
draft is rebuilt from the same random state, so the content stays the same apart from the filler's extent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mmx.tasks.tokens import TokenCounter

MAX_DRAFTS = 8


class TooShort(Exception):
    """Raised by a draft when the budget cannot hold the task's fixed parts; `needed` is a budget that would."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"needs at least {needed} tokens")
        self.needed = needed


@dataclass(frozen=True)
class Budget:
    """What a draft aims at: `aim` tokens for prompt + answer prefix, landing no more than `slack` below the target.

    It also names the sample being drafted (`length`, `index`, `seed`): some tasks change parameters with the length,
    and dataset-backed ones walk their questions in a seeded order by index.
    """

    aim: int
    slack: int
    length: int
    index: int = 0
    seed: int = 0


@dataclass
class Draft:
    """A prompt as pieces, plus what the sample records about it."""

    parts: list[str]
    answer_prefix: str
    references: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return "".join(self.parts)


def tolerance(length: int) -> int:
    """How far below its target a prompt may land: max(32 tokens, 0.01% of the target)."""
    return max(32, length // 10_000)


def fit(draft: Callable[[Budget], Draft], counter: TokenCounter, target: Budget) -> tuple[Draft, int]:
    """The draft whose `prompt + answer_prefix` has between `target.aim - target.slack` and `target.aim` tokens, and
    that count."""
    limit, slack = target.aim, target.slack
    aim = limit
    for _ in range(MAX_DRAFTS):
        result = draft(replace(target, aim=aim))
        n = counter.once(result.prompt + result.answer_prefix)
        if limit - slack <= n <= limit:
            return result, n
        aim += limit - n  # the summed counts were off by this much; shift the aim and redraft the same content
    raise RuntimeError(f"could not fit a prompt to {limit} tokens within {slack}; the tokenizer's counts do not add up")


def longest_prefix(text: str, budget: int, count: Callable[[str], int], slack: int) -> str:
    """The longest prefix of `text` within `budget` tokens, cut at a word boundary if that leaves < `slack` unused.

    Counts grow with the prefix for any sane tokenizer, so both searches are bisections over cut positions.
    """
    if budget <= 0 or not text.strip():
        return ""
    words = [i for i in range(1, len(text)) if text[i].isspace() and not text[i - 1].isspace()] + [len(text)]
    best = _last_fitting(words, lambda cut: count(text[:cut]) <= budget)
    start = words[best] if best >= 0 else 0
    if best >= 0 and budget - count(text[:start]) < slack:
        return text[:start]
    stop = words[best + 1] if best + 1 < len(words) else len(text)
    chars = list(range(start + 1, stop))
    fine = _last_fitting(chars, lambda cut: count(text[:cut]) <= budget)
    cut = chars[fine] if fine >= 0 else start
    return text[:cut] if text[:cut].strip() else ""


def _last_fitting(cuts: list[int], fits: Callable[[int], bool]) -> int:
    """Index of the last cut for which `fits` holds (-1 if none), assuming it holds up to some point and not after."""
    lo, hi = 0, len(cuts)  # invariant: every cut before lo fits, every cut from hi on does not
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(cuts[mid]):
            lo = mid + 1
        else:
            hi = mid
    return lo - 1
