"""Haystacks and the weaving of needles into them at token depths.

Three haystacks, as RULER names them: `noise` (a short group of plain sentences repeated line after line), `essay`
(prose from a corpus, from its start for every sample, cycling), and `needle` (every line a distractor needle, made
by the task). A haystack is a stream of units — a sentence or a line, each with its leading separator and its token
count — and `weave` takes units until a token budget is spent, cuts the last one to fit exactly, and places each needle
at the last allowed boundary at or before its depth (a line start for line haystacks, any sentence end for prose).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mmx.tasks.corpus import Corpus
from mmx.tasks.fit import longest_prefix
from mmx.tasks.tokens import TokenCounter

Unit = tuple[str, int, bool]  # text with its leading separator, token count, whether a needle may go before it
UnitStream = Callable[[random.Random, TokenCounter], Iterator[Unit]]

NOISE_SENTENCES = (
    "The grass is green.",
    "The sky is blue.",
    "The river runs to the sea.",
    "Birds sing in the morning.",
    "Night follows day.",
)


@dataclass(frozen=True)
class Haystack:
    """A named source of units; `needle_sep` joins a needle to the text before it."""

    name: str
    units: UnitStream
    needle_sep: str
    opening: str = ""  # what goes between the instruction and the first unit, for a blank line before the text
    params: dict[str, object] = field(default_factory=dict)


def noise_haystack() -> Haystack:
    """The noise group as one line, repeated; needles go between lines."""
    pieces = [("\n" if i == 0 else " ") + s for i, s in enumerate(NOISE_SENTENCES)]

    def units(rng: random.Random, counter: TokenCounter) -> Iterator[Unit]:
        line = [(text, counter(text), i == 0) for i, text in enumerate(pieces)]
        return itertools.chain.from_iterable(itertools.repeat(line))

    return Haystack("noise", units, "\n", "\n", {"sentences": list(NOISE_SENTENCES)})


def essay_haystack(corpus: Corpus) -> Haystack:
    """Corpus prose from its first sentence on, cycling; needles go after any sentence.

    As in RULER, every sample of a length reads the same text up to its first needle (only the needles and their
    depths differ), so the essays are no easier to skim in one sample than in another."""

    def units(rng: random.Random, counter: TokenCounter) -> Iterator[Unit]:
        counts = corpus.counts(counter)
        order = itertools.cycle(range(len(counts)))
        return ((corpus.sentences[i], corpus.count(counter, counts, i), True) for i in order)

    return Haystack("essay", units, " ", "", {**corpus.describe(), "start": "first sentence, every sample"})


def line_haystack(lines: Callable[[random.Random], Iterator[str]]) -> Haystack:
    """Lines made per sample by the task (distractor needles); needles go between lines."""

    def units(rng: random.Random, counter: TokenCounter) -> Iterator[Unit]:
        for line in lines(rng):
            text = "\n" + line
            yield text, counter.once(text), True

    return Haystack("needle", units, "\n", "\n")


@dataclass
class Woven:
    """Haystack text as pieces, its token count, and where each needle starts (token offset within the haystack)."""

    parts: list[str]
    tokens: int
    offsets: list[int]
    filler_tokens: int


class _Loom:
    """The state of one weave: units taken so far, needles placed, tokens spent and still reserved for needles."""

    def __init__(self, counter: TokenCounter, sep: str, needles: list[str]) -> None:
        self.counter = counter
        self.sep = sep
        self.texts = [sep + text for text in needles]
        self.counts = [counter.once(t) for t in self.texts]
        self.reserve = sum(self.counts)  # tokens of needles not yet placed
        self.units: list[str] = []
        self.unit_counts: list[int] = []
        self.placed: list[tuple[int, int]] = []  # (index of the unit the needle precedes, needle number)
        self.spent = 0
        self.filled = 0

    def add(self, text: str, n: int) -> None:
        self.units.append(text)
        self.unit_counts.append(n)
        self.spent += n
        self.filled += n

    def place(self, k: int, where: int) -> None:
        """Put needle `k` before unit `where`; at the very start it takes the first unit's separator instead."""
        self.reserve -= self.counts[k]
        if where == 0 and self.units and not any(w == 0 for w, _ in self.placed):
            first = self.units[0]
            lead = first[: len(first) - len(first.lstrip())]
            if lead != self.sep:
                self.texts[k] = lead + self.texts[k][len(self.sep) :]
                self.counts[k] = self.counter.once(self.texts[k])
                self.units[0] = self.sep + first.lstrip()
                recount = self.counter.once(self.units[0])
                self.spent += recount - self.unit_counts[0]
                self.unit_counts[0] = recount
        self.spent += self.counts[k]
        self.placed.append((where, k))

    def woven(self) -> Woven:
        """Interleave the placed needles with the units and note each needle's token offset."""
        parts: list[str] = []
        offsets = [0] * len(self.texts)
        position = 0
        queue = sorted(self.placed, key=lambda p: p[0])  # stable: needles at one boundary keep their depth order
        q = 0
        for i in range(len(self.units) + 1):
            while q < len(queue) and queue[q][0] == i:
                k = queue[q][1]
                offsets[k] = position
                parts.append(self.texts[k])
                position += self.counts[k]
                q += 1
            if i < len(self.units):
                parts.append(self.units[i])
                position += self.unit_counts[i]
        return Woven(parts, self.spent, offsets, self.filled)


def weave(
    haystack: Haystack,
    rng: random.Random,
    counter: TokenCounter,
    budget: int,
    needles: list[tuple[float, str]],
    slack: int,
) -> Woven:
    """Fill `budget` tokens with haystack units and needles (depth in [0, 1], text without separator).

    Depth is measured over the filler tokens: a needle goes before the last breakable unit that starts at or before
    `depth * filler`, i.e. right after the previous sentence or line, so at 100% it follows the last whole unit (only
    the cut-off remainder of one unit comes after it). The last unit is cut (at a word boundary when that lands within
    `slack`) so the total meets the budget.
    """
    loom = _Loom(counter, haystack.needle_sep, [text for _, text in needles])
    fill = budget - loom.reserve
    targets = sorted((depth * fill, k) for k, (depth, _) in enumerate(needles))
    pending = 0
    last_break = 0
    for text, n, breakable in haystack.units(rng, counter):
        if breakable:
            while pending < len(targets) and targets[pending][0] < loom.filled:
                loom.place(targets[pending][1], last_break)
                pending += 1
            last_break = len(loom.units)
        room = budget - loom.spent - loom.reserve
        if n > room:
            part = longest_prefix(text, room, counter.once, slack)
            if part:
                loom.add(part, counter.once(part))
            break
        loom.add(text, n)
    for _, k in targets[pending:]:  # depths at or past the last boundary, 100% included: after the last whole unit
        loom.place(k, last_break)
    return loom.woven()
