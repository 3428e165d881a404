"""The memory plan against what a CPU run allocates: weights and cache to the byte, activations as a bound.

Weights are every parameter and buffer a rank holds (8-bit experts and their scales included), the cache every
state and K/V tensor after `reserve(length)`. Activations are measured as the peak of tensors live during one prefill
chunk (a dispatch mode sees every op's output; views and in-place writes add nothing); the plan over-estimates them
on purpose, by at most a factor of three.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mmx.errors import MmxError
from mmx.model.backends.base import load_backend
from mmx.model.config import MiniMaxConfig
from mmx.model.generate import prefill
from mmx.model.parallel.build import random_sharded
from mmx.model.parallel.layout import ShardLayout
from mmx.model.parallel.plan import memory_plan


class LivePeak(TorchDispatchMode):
    """Peak bytes of storages created by ops inside the mode and still referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.refs: dict[int, int] = {}

    def _release(self, key: int, nbytes: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in tensors}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in inputs and key not in self.refs:  # a view of, or a write into, memory that existed before
                continue
            if key not in self.refs:
                self.refs[key] = 0
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.refs[key] += 1
            weakref.finalize(tensor, self._release, key, storage.nbytes())
        return out


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize(("tp", "quantize"), [(1, None), (1, "int8"), (2, "fp8"), (4, None)])
def test_weights_and_cache_are_exact_for_every_rank(tp, quantize):
    config = MiniMaxConfig.from_name("tiny")
    plan = memory_plan(config, length=3000, dtype_bytes=4, tp=tp, quantize=quantize, rows=2)
    for rank in range(tp):  # every rank holds as much as rank 0 (the vocabulary split is padded to equal rows)
        model = random_sharded(ShardLayout(config, rank, tp), None, torch.device("cpu"), torch.float32, 0, quantize)
        assert _bytes([*model.parameters(), *model.buffers()]) == plan.weights
        cache = model.new_cache(2)
        cache.reserve(3000)
        assert _bytes([*cache.states.values(), *cache.keys.values(), *cache.values.values()]) == plan.cache


@pytest.mark.parametrize(("spec", "tokens"), [("random:tiny", 1024), ("mmx-mini", 4096)])
def test_activations_of_a_prefill_chunk_are_bounded_by_the_plan(spec, tokens):
    backend = load_backend(spec)
    ids = torch.randint(0, backend.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    cache = backend.model.new_cache(1)
    cache.reserve(tokens)
    with torch.no_grad(), LivePeak() as live:
        prefill(backend.model, ids, cache, chunk_size=tokens)  # one chunk (a later one attends to the cache as well)
    planned = memory_plan(backend.config, length=tokens, dtype_bytes=4, chunk=tokens)
    assert live.peak <= planned.items["activations (one prefill chunk)"] <= 3 * live.peak


def test_a_plan_that_does_not_fit_is_refused_with_the_length_that_would():
    config = MiniMaxConfig.from_name("minimax-text-01")
    plan = memory_plan(config, length=4 << 20, dtype_bytes=2, tp=8, quantize="fp8")
    assert 80e9 < plan.total < 85e9  # 54.4 GB of fp8 experts and 21.5 GB of K/V per rank dominate
    plan.check(int(85e9), "cuda:0")
    with pytest.raises(MmxError) as err:
        plan.check(int(79e9), "cuda:0")
    assert "has 79.0 GB free" in str(err.value) and "lengths up to 2m fit as it is" in str(err.value)
    bf16 = memory_plan(config, length=4096, dtype_bytes=2, tp=8)
    with pytest.raises(MmxError, match="no length fits as it is; otherwise use more ranks .* or 8-bit experts"):
        bf16.check(int(80e9), "cuda:0")  # 109 GB of bf16 experts per rank
