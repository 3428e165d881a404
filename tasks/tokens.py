"""Token counting for one tokenizer, with a cache for the pieces that recur across samples.

Prompts are assembled from pieces (sentences, needle lines, words, template parts) whose counts add up to the prompt's
count whenever pieces meet at a pre-tokenization boundary, which is why every piece carries its leading separator and
ends without whitespace. Counting each distinct piece once and summing is what makes a 4M-token prompt cheap to size;
one encode of the finished prompt then checks the sum.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """What tasks need of a tokenizer: sizes are always counted in these tokens (a backend's tokenizer is one)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class TokenCounter:
    """Counts tokens of text pieces in one tokenizer; `__call__` caches, `once` does not."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, int] = {}
        self.tables: dict[Hashable, Any] = {}  # per-tokenizer tables built from many counts (e.g. a corpus)

    def __call__(self, text: str) -> int:
        """Count a piece that will come back (a sentence, a word, a template part)."""
        count = self._cache.get(text)
        if count is None:
            count = self._cache[text] = len(self.tokenizer.encode(text))
        return count

    def once(self, text: str) -> int:
        """Count a piece unique to one sample (a needle with its random value, a whole prompt) without caching it."""
        return len(self.tokenizer.encode(text))


_COUNTERS: weakref.WeakKeyDictionary[Any, TokenCounter] = weakref.WeakKeyDictionary()


def counter_for(tokenizer: Tokenizer) -> TokenCounter:
    """The shared counter of `tokenizer`, so its cache lives as long as the tokenizer does."""
    try:
        counter = _COUNTERS.get(tokenizer)
        if counter is None:
            counter = _COUNTERS[tokenizer] = TokenCounter(tokenizer)
        return counter
    except TypeError:  # neither hashable nor weak-referenceable: cache for this call only
        return TokenCounter(tokenizer)
