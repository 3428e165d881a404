"""Random keys and values for needles: word keys (adjective-noun), 7-digit numbers and uuid4 strings.

Everything is drawn from the sample's own `random.Random`, so a (task, length, index, seed) always gives the same
needles. Distractors are drawn from the same spaces but never repeat a key or equal an answer.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable

from mmx.tasks.lexicon import lexicon

Draw = Callable[[random.Random], str]


def word_key(rng: random.Random) -> str:
    """An adjective-noun pair such as 'quiet-harbor' (about 230k of them)."""
    lex = lexicon()
    return f"{rng.choice(lex.adjectives)}-{rng.choice(lex.nouns)}"


def long_word_key(rng: random.Random) -> str:
    """Adjective-adjective-noun, for when a haystack needs more distinct keys than the pairs offer."""
    lex = lexicon()
    return f"{rng.choice(lex.adjectives)}-{word_key(rng)}"


def number(rng: random.Random) -> str:
    """A 7-digit number."""
    return str(rng.randint(1_000_000, 9_999_999))


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID from the sample's random stream (not from the OS)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


KINDS: dict[str, Draw] = {"words": word_key, "numbers": number, "uuids": uuid4}


class Distinct:
    """Draws values never seen before from `draw`, starting with `taken` excluded.

    For word keys, once half of the pair space is used it switches to three-word keys, so rejection stays cheap.
    """

    def __init__(self, draw: Draw, taken: Iterable[str] = ()) -> None:
        self.draw = draw
        self.seen = set(taken)
        self.pairs = len(lexicon().adjectives) * len(lexicon().nouns)

    def __call__(self, rng: random.Random) -> str:
        draw = long_word_key if self.draw is word_key and len(self.seen) > self.pairs // 2 else self.draw
        while True:
            value = draw(rng)
            if value not in self.seen:
                self.seen.add(value)
                return value

    def take(self, rng: random.Random, n: int) -> list[str]:
        return [self(rng) for _ in range(n)]
