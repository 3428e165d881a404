"""RULER's common words extraction (`cwe`): a numbered list of words; name the ten that appear most often.

RULER's parameters: 10 common words appearing 30 times each, every other word 3 times (below 4k tokens: 6 and 1), the
list shuffled and numbered, one worked example first. The list grows with the target length by adding uncommon words;
plain lexicon words come first, then two-noun compounds ("harborlantern") once the lexicon runs out, so any length
gets distinct words. No uncommon word contains a common word, so a substring match never credits a wrong answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

from mmx.tasks.base import Task, too_short_unless
from mmx.tasks.fit import Budget, Draft
from mmx.tasks.lexicon import lexicon
from mmx.tasks.tokens import TokenCounter

SHORT = 4096  # below this target length RULER lowers the frequencies
SHORT_FREQS = (6, 1)
EXAMPLE_FREQS = (2, 1)
EXAMPLE_UNCOMMON = 10
NUMBER_BLOCK = 1024
TOP_UP_CANDIDATES = 256

INSTRUCTION = (
    "Below is a numbered list of words. Some words appear many times, others only a few times. Find the {n} words "
    "that appear most often."
)
EXAMPLE_HEAD = "\n\nExample list:"
REAL_HEAD = "\n\nNow the real list:"
QUESTION = "\n\nQuestion: What are the {n} most common words in the list above?\n"
ANSWER_PREFIX = "Answer: The {n} most common words in the list are:"


class NumberCosts:
    """Cumulative token cost of the list numbers " 1.", " 2.", ... in one tokenizer, counted a block at a time.

    A block of numbers is encoded as one string (its pieces meet at pre-tokenization boundaries), so sizing a list of
    300k entries costs a few hundred encodes; only the last, partial block is counted number by number.
    """

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter
        self.block_prefix = [0]  # tokens of all numbers in the first b blocks
        self.partial: dict[int, list[int]] = {}

    def __call__(self, m: int) -> int:
        """Tokens of the numbers 1..m."""
        block, rest = divmod(m, NUMBER_BLOCK)
        while len(self.block_prefix) <= block:
            b = len(self.block_prefix) - 1
            numbers = "".join(f" {i}." for i in range(b * NUMBER_BLOCK + 1, (b + 1) * NUMBER_BLOCK + 1))
            self.block_prefix.append(self.block_prefix[-1] + self.counter.once(numbers))
        if not rest:
            return self.block_prefix[block]
        if block not in self.partial:
            first = block * NUMBER_BLOCK + 1
            counts = [self.counter.once(f" {i}.") for i in range(first, first + NUMBER_BLOCK)]
            self.partial[block] = [0, *_accumulate(counts)]
        return self.block_prefix[block] + self.partial[block][rest]


def _accumulate(values: list[int]) -> list[int]:
    total, out = 0, []
    for v in values:
        total += v
        out.append(total)
    return out


def numbered(words: list[str]) -> str:
    """' 1. apple 2. river ...' — each piece a number then a word, both with their leading space."""
    return "".join(f" {i}. {w}" for i, w in enumerate(words, start=1))


class CommonWords(Task):
    """Aggregation over a word list whose size follows the target length."""

    name = "cwe"
    category = "aggregation"
    metric = "all"
    max_new_tokens = 120

    def __init__(self, *, num_cw: int = 10, freq_cw: int = 30, freq_ucw: int = 3, **options: Any) -> None:
        super().__init__(**options)
        self.num_cw, self.freq_cw, self.freq_ucw = num_cw, freq_cw, freq_ucw

    def describe(self) -> dict[str, Any]:
        (freq_cw, freq_ucw), (short_cw, short_ucw) = (self.freq_cw, self.freq_ucw), SHORT_FREQS
        return {
            "num_cw": self.num_cw,
            "freq_cw": self.freq_cw,
            "freq_ucw": self.freq_ucw,
            "short_freqs": f"{short_cw}/{short_ucw} below {SHORT} tokens or where {freq_cw}/{freq_ucw} cannot fit",
            "examples": 1,
        }

    def draft(self, rng: random.Random, counter: TokenCounter, budget: Budget) -> Draft:
        singles = list(lexicon().common_words)
        rng.shuffle(singles)
        n = self.num_cw
        example_common, example_rare = singles[:n], singles[n : n + EXAMPLE_UNCOMMON]
        example = self._example(rng, example_common, example_rare)
        head = INSTRUCTION.format(n=n) + example + REAL_HEAD
        question = QUESTION.format(n=n)
        prefix = self.answer_prefix(ANSWER_PREFIX.format(n=n))
        numbers = counter.tables.setdefault("cwe-numbers", NumberCosts(counter))
        fixed = counter.once(head) + counter.once(question) + counter.once(prefix)
        state = rng.getstate()
        for form in ("words", "compounds"):  # as RULER: one pool for answers and distractors, bigger when needed
            rng.setstate(state)
            words = _word_pool(rng, form, singles[n + EXAMPLE_UNCOMMON :])
            common = _distinct_answers(words, n)
            common_cost = sum(counter(" " + w) for w in common)

            def smallest_list(freq_cw: int, freq_ucw: int, cost: int = common_cost) -> int:  # commons + as many others
                return fixed + numbers(n * (freq_cw + freq_ucw)) + (freq_cw + freq_ucw) * cost

            full = budget.length >= SHORT and smallest_list(self.freq_cw, self.freq_ucw) <= budget.aim
            freq_cw, freq_ucw = (self.freq_cw, self.freq_ucw) if full else SHORT_FREQS
            too_short_unless(budget.aim, smallest_list(freq_cw, freq_ucw))
            base_entries = n * freq_cw
            base = fixed + numbers(base_entries) + freq_cw * common_cost
            pool = _uncommon_words(words, common)
            chosen, exhausted = self._fill(
                pool, counter, numbers, budget.aim - base, base_entries, freq_ucw, budget.slack
            )
            if not exhausted:
                break
        entries = [w for w in common for _ in range(freq_cw)] + [w for w in chosen for _ in range(freq_ucw)]
        rng.shuffle(entries)
        metadata = {
            "freq_cw": freq_cw,
            "freq_ucw": freq_ucw,
            "uncommon_words": len(chosen),
            "entries": len(entries),
            "word_form": form,
        }
        return Draft([head, numbered(entries), question], prefix, common, metadata)

    @staticmethod
    def _example(rng: random.Random, common: list[str], rare: list[str]) -> str:
        """The worked example: a short list (common words twice, others once) with its question and answer."""
        entries = [w for w in common for _ in range(EXAMPLE_FREQS[0])] + [
            w for w in rare for _ in range(EXAMPLE_FREQS[1])
        ]
        rng.shuffle(entries)
        answer = ANSWER_PREFIX.format(n=len(common)) + " " + " ".join(common)
        return f"{EXAMPLE_HEAD}{numbered(entries)}{QUESTION.format(n=len(common))}{answer}"

    @staticmethod
    def _fill(
        pool: Iterator[str],
        counter: TokenCounter,
        numbers: NumberCosts,
        budget: int,
        first_entry: int,
        freq: int,
        slack: int,
    ) -> tuple[list[str], bool]:
        """Uncommon words (each `freq` times) filling `budget` tokens; then closes a gap of `slack` or more by adding
        a word that fits or swapping a chosen word for a longer one. Also says whether the pool ran out first."""
        chosen: list[str] = []
        spent = 0
        m = first_entry

        def cost(word: str, at: int) -> int:  # `freq` entries of `word` numbered after entry `at`
            return numbers(at + freq) - numbers(at) + freq * counter(" " + word)

        for word in pool:
            c = cost(word, m)
            if spent + c > budget:
                spare = [word, *(w for _, w in zip(range(TOP_UP_CANDIDATES), pool, strict=False))]
                break
            chosen.append(word)
            spent += c
            m += freq
        else:
            spare = []
        exhausted = not spare and budget - spent >= slack
        gap = budget - spent
        if gap >= slack and spare:
            fits = [(cost(w, m), w) for w in spare if cost(w, m) <= gap]
            if fits:
                c, word = max(fits)
                chosen.append(word)
                spare.remove(word)
                spent, gap, m = spent + c, gap - c, m + freq
        if gap >= slack and spare and chosen:
            unit = {w: freq * counter(" " + w) for w in (*chosen[-TOP_UP_CANDIDATES:], *spare)}
            swaps = [
                (unit[new] - unit[old], i, new)
                for i, old in enumerate(chosen[-TOP_UP_CANDIDATES:], start=max(0, len(chosen) - TOP_UP_CANDIDATES))
                for new in spare
                if 0 < unit[new] - unit[old] <= gap
            ]
            if swaps:
                _, i, new = max(swaps)
                chosen[i] = new
        return chosen, exhausted


def _word_pool(rng: random.Random, form: str, singles: list[str]) -> Iterator[str]:
    """Distinct words in random order: the lexicon's plain words, or endless noun-noun compounds ("harborlantern")
    for lists longer than the lexicon; the answers and the distractors of one list come from the same pool."""
    if form == "words":
        yield from singles
        return
    nouns = lexicon().nouns
    seen: set[str] = set()
    while True:
        word = rng.choice(nouns) + rng.choice(nouns)
        if word not in seen:
            seen.add(word)
            yield word


def _distinct_answers(words: Iterator[str], n: int) -> list[str]:
    """The first `n` words of the pool of which none contains another (so no answer is credited by another)."""
    chosen: list[str] = []
    for word in words:
        if not any(word in c or c in word for c in chosen):
            chosen.append(word)
            if len(chosen) == n:
                return chosen
    raise RuntimeError("the word pool is smaller than the number of answers")


def _uncommon_words(words: Iterator[str], common: list[str]) -> Iterator[str]:
    """The rest of the pool, less any word that contains an answer (a substring match would credit it)."""
    hides_answer = re.compile("|".join(map(re.escape, common)))
    return (word for word in words if not hides_answer.search(word))
