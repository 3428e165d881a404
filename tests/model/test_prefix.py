"""Prefix reuse: prompts prefilled through a PrefixWalker give what separate prefills give (fp32, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmx.model import MiniMaxConfig, MiniMaxForCausalLM
from mmx.model.config import LIGHTNING
from mmx.model.generate import GenerateStats, generate, prefill
from mmx.model.prefix import PrefixWalker, branch_points, common_prefix, walk_order


def _model(preset: str, arch: str) -> MiniMaxForCausalLM:
    config = MiniMaxConfig.from_name(preset)
    if arch == "lightning":
        config = dataclasses.replace(config, attn_type_list=[LIGHTNING] * config.num_hidden_layers)
    model = MiniMaxForCausalLM(config)
    model.config.initializer_range = 0.2  # large weights: a wrong state or K/V shows in the greedy tokens
    model.init_weights(seed=3)
    return model.eval()


@pytest.fixture(scope="module", params=["tiny-hybrid", "tiny-lightning", "mmx-mini-hybrid", "mmx-mini-lightning"])
def model(request: pytest.FixtureRequest) -> MiniMaxForCausalLM:
    preset, arch = request.param.rsplit("-", 1)
    return _model(preset, arch)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to fp32 rounding of differently grouped sums: the largest difference ≤ 1e-4 of the largest logit."""
    return (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()


def _needles(depths: list[int], length: int = 700, seed: int = 0) -> list[list[int]]:
    """One haystack with a different 5-token needle at each depth and a common question at the end, as RULER's
    prompts of one length are once they share their haystack."""
    g = torch.Generator().manual_seed(seed)
    hay = torch.randint(0, 256, (length,), generator=g).tolist()
    question = [10, 20, 30, 40]
    return [hay[:d] + torch.randint(0, 256, (5,), generator=g).tolist() + hay[d:] + question for d in depths]


def test_common_prefix_and_branch_points() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix(list(range(10_000)), list(range(9_000)) + [-1] * 5) == 9_000
    assert common_prefix([1, 2, 3], [1, 2, 3], limit=1) == 1
    a, b, c = [5] * 10 + [1], [5] * 10 + [2], [5] * 4 + [0]
    assert walk_order([a, b, c]) == [2, 0, 1]
    assert branch_points([a, b, c], min_shared=1) == [4, 10]
    assert branch_points([a, b, c], min_shared=5) == [10]
    assert branch_points([a, a], min_shared=1) == [10]  # identical prompts keep their last token to compute


def test_prefill_cuts_chunks_at_multiples_of_the_chunk_size() -> None:
    model = _model("tiny", "hybrid")
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: sizes.append(args[0].shape[1]), with_kwargs=True)
    try:
        cache = model.new_cache(1)
        prefill(model, torch.zeros(1, 21, dtype=torch.long), cache, chunk_size=8)
        prefill(model, torch.zeros(1, 20, dtype=torch.long), cache, chunk_size=8)
    finally:
        hook.remove()
    assert sizes == [8, 8, 5, 3, 8, 8, 1]


def test_walked_prompts_generate_what_separate_prefills_generate(model: MiniMaxForCausalLM) -> None:
    prompts = _needles([100, 350, 350, 600, 20, 699])
    alone = generate(model, prompts, 8, chunk_size=128)
    stats = GenerateStats()
    walker = PrefixWalker(model, 128, branch_points(prompts, min_shared=8))
    assert generate(model, prompts, 8, chunk_size=128, walker=walker, stats=stats) == alone
    assert [r + p for r, p in zip(stats.read, stats.prefilled, strict=True)] == [len(p) for p in prompts]
    # the haystack up to the deepest needle once, then each prompt's own rest
    depths = [100, 350, 350, 600, 20, 699]
    assert sum(stats.prefilled) == 699 + sum(len(p) - d for p, d in zip(prompts, depths, strict=True))


def test_the_first_logits_match_a_separate_prefill(model: MiniMaxForCausalLM) -> None:
    prompts = _needles([64, 130, 333], length=400, seed=1)
    walker = PrefixWalker(model, 32, branch_points(prompts, min_shared=8))
    for index, fed in walker.walk(prompts):
        cache = model.new_cache(1)
        alone = prefill(model, torch.tensor([prompts[index]]), cache, chunk_size=32)
        assert fed.read > 0 or index == walk_order(prompts)[0]
        assert _close(fed.logits, alone)


def test_one_prompt_per_call_in_walk_order_reuses_the_prefix_across_calls() -> None:
    model = _model("tiny", "hybrid")
    depths = [300, 90, 500, 90, 250]
    prompts = _needles(depths)
    walker = PrefixWalker(model, 64, branch_points(prompts, min_shared=8))
    read = []
    for index in walk_order(prompts):
        stats = GenerateStats()
        out = generate(model, [prompts[index]], 10, chunk_size=64, walker=walker, stats=stats)  # decodes in its row
        assert out == generate(model, [prompts[index]], 10, chunk_size=64)
        read.append(stats.read[0])
    assert read[0] == 0 and all(r >= 90 for r in read[1:])


def test_a_walk_interrupted_mid_prefill_goes_on_correctly() -> None:
    model = _model("tiny", "hybrid")
    prompts = _needles([200, 400, 600])
    walker = PrefixWalker(model, 64, branch_points(prompts, min_shared=8))
    order = walk_order(prompts)
    walker.feed(prompts[order[0]])
    calls = {"n": 0}

    def fail_on_third(*_: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("out of memory")

    hook = model.register_forward_pre_hook(fail_on_third)
    with pytest.raises(torch.OutOfMemoryError):
        walker.feed(prompts[order[1]])
    hook.remove()
    for index in order[1:]:
        fed = walker.feed(prompts[index])
        alone = prefill(model, torch.tensor([prompts[index]]), model.new_cache(1), chunk_size=64)
        assert _close(fed.logits, alone)


def test_prompts_sharing_nothing_go_through_a_walker_unchanged() -> None:
    model = _model("tiny", "hybrid")
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (50, 80, 30)]
    assert branch_points(prompts) == []
    stats = GenerateStats()
    walked = generate(model, prompts, 8, walker=PrefixWalker(model, 16), stats=stats, chunk_size=16)
    assert walked == generate(model, prompts, 8, chunk_size=16)
    assert stats.read == [0, 0, 0] and stats.prefilled == [50, 80, 30]
