"""Prefix reuse: prompts that begin alike prefill their common beginning once.

The samples of one RULER cell often share a haystack up to their first needle. A `PrefixWalker` keeps one cache row
and visits prompts in an order where neighbours share long beginnings (sorted token ids: a depth-first walk of the
prompts' trie). For each prompt it goes back to the longest beginning the prompt shares with the tokens it holds,
and prefills only the rest. Going back needs the lightning states at that position: fixed-size fp32 copies, taken as
the walk passes the positions where prompts part (`branch_points`). Softmax K/V need nothing, since the keys of a
prefix are a prefix of the keys.

What a prompt gets equals its own separate prefill up to rounding: the same products, but a chunk boundary at the
point where it left the shared part, so some sums are grouped differently (`prefill` keeps every other boundary
where a separate prefill puts it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch

from .cache import ModelCache
from .generate import prefill
from .modeling import MiniMaxForCausalLM

MIN_SHARED = 256  # tokens: a shorter common beginning saves less than the extra forward call and state copy it costs
_BLOCK = 4096  # ids compared per slice when measuring a common prefix (slice equality runs at C speed)


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int | None = None) -> int:
    """Length of the longest common prefix of `a` and `b` (at most `limit`)."""
    n = min(len(a), len(b), limit if limit is not None else len(a))
    at = 0
    while at < n:
        end = min(at + _BLOCK, n)
        if a[at:end] == b[at:end]:
            at = end
            continue
        while a[at] == b[at]:
            at += 1
        return at
    return n


def walk_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Indices of `prompts` in sorted token-id order, where each prompt shares the longest beginning with its
    neighbours (a depth-first visit of their trie)."""
    return sorted(range(len(prompts)), key=lambda i: list(prompts[i]))


def branch_points(prompts: Sequence[Sequence[int]], min_shared: int = MIN_SHARED) -> list[int]:
    """Positions where prompts part, i.e. where a walk in `walk_order` must keep the lightning states to come back to:
    the common prefix of each pair of neighbours, cut so that each keeps one token of its own (the one whose logits
    start its generation), and only where at least `min_shared` tokens are shared."""
    order = walk_order(prompts)
    points = set()
    for i, j in zip(order[:-1], order[1:], strict=False):
        a, b = prompts[i], prompts[j]
        shared = min(common_prefix(a, b), len(a) - 1, len(b) - 1)
        if shared >= min_shared:
            points.add(shared)
    return sorted(points)


class Fed(NamedTuple):
    """A prompt fed to a walker: the logits after its last token [1, V], and how many of its tokens were read from
    the walker's cache rather than computed."""

    logits: torch.Tensor
    read: int
    prefilled: int


class PrefixWalker:
    """One cache row that prefills prompts in turn, each from the longest beginning it shares with the tokens before.

    Invariants: `cache` holds the first `known` tokens of `ids` (at exactly that position when `at_end`), and every
    snapshot is the lightning state after `ids[:p]` for its position p ≤ known.
    """

    def __init__(
        self, model: MiniMaxForCausalLM, chunk_size: int, branch_points: Iterable[int] = (), min_shared: int = 1
    ) -> None:
        self.model = model
        self.chunk_size = chunk_size
        self.branch_points = sorted(set(branch_points))
        self.min_shared = min_shared  # a prompt sharing fewer tokens than this starts from the empty cache
        self.cache: ModelCache = model.new_cache(1)
        self.ids: Sequence[int] = []
        self.known = 0
        self.at_end = True
        self.snapshots: dict[int, dict[int, torch.Tensor]] = {}

    def reserve(self, tokens: int) -> None:
        """Room for `tokens` in the walker's row (its prompts, plus the new tokens when it is lent for decoding)."""
        self.cache.reserve(tokens)

    def snapshot_bytes(self) -> int:
        """Device memory the lightning-state copies will take when every branch point holds one."""
        per_snapshot = sum(s.numel() * s.element_size() for s in self.cache.states.values())
        return per_snapshot * len(self.branch_points)

    def feed(self, prompt: Sequence[int]) -> Fed:
        """Leave the cache holding exactly `prompt`; compute only what it does not share with the cache."""
        n = len(prompt)
        if n == 0:
            raise ValueError("a prompt needs at least one token")
        shared = min(common_prefix(self.ids, prompt, self.known), n - 1)
        start = self._go_back(shared if shared >= self.min_shared else 0)
        self.ids, self.known = prompt, start
        rest = torch.tensor([list(prompt[start:])], device=self.model.device)  # one host-to-device copy per prompt
        logits = None
        for stop in [b for b in self.branch_points if start < b < n] + [n]:
            self.at_end = False  # an interrupted prefill (out of memory) leaves the cache past `known`
            logits = prefill(self.model, rest[:, self.known - start : stop - start], self.cache, self.chunk_size)
            self.known, self.at_end = stop, True
            if stop < n:
                self.snapshots[stop] = self.cache.snapshot()
        return Fed(logits, start, n - start)  # type: ignore[arg-type]

    def walk(self, prompts: Sequence[Sequence[int]]) -> Iterator[tuple[int, Fed]]:
        """Feed `prompts` in `walk_order`, yielding (index, what `feed` returned) while the cache holds that prompt."""
        for index in walk_order(prompts):
            yield index, self.feed(prompts[index])

    def lend(self) -> ModelCache:
        """The cache, for a caller that decodes in it: afterwards only the snapshots are trusted."""
        self.at_end = False
        return self.cache

    def _go_back(self, shared: int) -> int:
        """Put the cache at the deepest position ≤ `shared` it can reach (its end, a snapshot, or empty); return it."""
        if self.at_end and shared == self.known:
            return shared
        start = max((p for p in self.snapshots if p <= shared), default=0)
        self.cache.rewind(start, self.snapshots.get(start))
        self.snapshots = {p: s for p, s in self.snapshots.items() if p <= start}
        self.at_end = True
        return start
