"""RULER's frequent words extraction (`fwe`): a text of coded words with Zipf-distributed counts; name the top three.

RULER's parameters: coded words of six random lowercase letters, a vocabulary of about length/50 words, word `k` of
the ranking appearing floor(N k^-α / ζ(α)) times with α = 2, and the rank-1 word replaced by the noise token "...", so
the answer is ranks 2 to 4. N grows with the target length; to land exactly, words just past the ones with a
nonzero count get one extra occurrence each, which leaves the top of the ranking untouched.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

from mmx.tasks.base import Task, too_short_unless
from mmx.tasks.fit import Budget, Draft
from mmx.tasks.tokens import TokenCounter

NOISE = "..."
WORD_LETTERS = 6
ANSWERS = 3

INSTRUCTION = "Read the coded text below and keep track of how often each coded word occurs."
TEXT_HEAD = "\n\nText:"
QUESTION = "\n\nQuestion: Ignoring the dots '...', which {n} coded words occur most often in the text above?\n"
ANSWER_PREFIX = "Answer: The {n} most frequent coded words in the text above are:"


def zeta(alpha: float, terms: int = 100_000) -> float:
    """Riemann zeta by direct summation plus the integral tail (exact to ~1e-10 for alpha = 2)."""
    head = sum(k**-alpha for k in range(1, terms + 1))
    return head + terms ** (1 - alpha) / (alpha - 1)


def zipf_counts(total: int, vocab: int, alpha: float, z: float) -> list[int]:
    """floor(total * k^-alpha / zeta) for k = 1..vocab, cut where the counts reach zero."""
    counts = []
    for k in range(1, vocab + 1):
        c = int(total * k**-alpha / z)
        if c == 0:
            break
        counts.append(c)
    return counts


class FrequentWords(Task):
    """Aggregation over a Zipf-distributed coded text."""

    name = "fwe"
    category = "aggregation"
    metric = "all"
    max_new_tokens = 50

    def __init__(self, *, alpha: float = 2.0, tokens_per_word: int = 50, **options: Any) -> None:
        super().__init__(**options)
        self.alpha = alpha
        self.tokens_per_word = tokens_per_word  # vocabulary size = length // tokens_per_word, as RULER sizes it
        self.zeta = zeta(alpha)

    def describe(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "vocab_size": f"length // {self.tokens_per_word}",
            "coded_word_letters": WORD_LETTERS,
            "noise_word": NOISE,
        }

    def _vocabulary(self, rng: random.Random, size: int) -> list[str]:
        """`size` distinct coded words; the first is replaced by the noise token (it will be the most frequent)."""
        words: dict[str, None] = {}
        while len(words) < size:
            words["".join(rng.choices(string.ascii_lowercase, k=WORD_LETTERS))] = None
        return [NOISE, *list(words)[1:]]

    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        vocab_size = max(ANSWERS + 2, budget.length // self.tokens_per_word)
        vocab = self._vocabulary(rng, vocab_size)
        head = INSTRUCTION + TEXT_HEAD  # the words follow it, each with its leading space
        question = QUESTION.format(n=ANSWERS)
        prefix = self.answer_prefix(ANSWER_PREFIX.format(n=ANSWERS))
        room = budget.aim - counter.once(head) - counter.once(question) - counter.once(prefix)
        costs: dict[int, int] = {}

        def cost(k: int) -> int:
            if k not in costs:
                costs[k] = counter.once(" " + vocab[k])
            return costs[k]

        def text_tokens(total: int) -> int:
            counts = zipf_counts(total, vocab_size, self.alpha, self.zeta)
            return sum(c * cost(k) for k, c in enumerate(counts))

        lo = _least_ranked_total(self.alpha, self.zeta)
        too_short_unless(room, text_tokens(lo) + 1)
        hi = max(lo, room)  # every word costs at least one token, so more than `room` words never fit
        while lo < hi:  # bisection for the largest total whose text fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if text_tokens(mid) <= room else (lo, mid - 1)
        counts = zipf_counts(lo, vocab_size, self.alpha, self.zeta)
        counts += [0] * (vocab_size - len(counts))
        self._top_up(counts, cost, room - text_tokens(lo))
        words = [w for w, c in zip(vocab, counts, strict=True) for _ in range(c)]
        rng.shuffle(words)
        metadata = {"total_words": len(words), "counts_top5": counts[: ANSWERS + 2]}
        return Draft([head, "".join(" " + w for w in words), question], prefix, vocab[1 : ANSWERS + 1], metadata)

    @staticmethod
    def _top_up(counts: list[int], cost: Callable[[int], int], spare: int) -> None:
        """Spend `spare` tokens on single extra occurrences: first words with no occurrence yet, then the rarest
        ones, never reaching the count of the last answer word, so ranks 1-4 keep their places."""
        ceiling = counts[ANSWERS] - 1  # an extra occurrence must stay below the rank-4 word
        first_zero = counts.index(0) if 0 in counts else len(counts)
        candidates = [*range(first_zero, len(counts)), *range(first_zero - 1, ANSWERS, -1)]
        for k in candidates:
            if spare <= 0:
                return
            if counts[k] < ceiling and cost(k) <= spare:
                counts[k] += 1
                spare -= cost(k)


def _least_ranked_total(alpha: float, z: float) -> int:
    """The smallest word total for which ranks 2-5 have strictly decreasing counts (the answers are unambiguous)."""
    total = 1
    while True:
        top = zipf_counts(total, ANSWERS + 2, alpha, z)
        if len(top) == ANSWERS + 2 and all(a > b for a, b in zip(top[1:], top[2:], strict=False)):
            return total
        total += 1
