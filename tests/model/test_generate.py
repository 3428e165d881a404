"""Cache, chunked prefill, decode and generation agree exactly with plain full-sequence forwards."""

from __future__ import annotations

import pytest
import torch

from mmx.model import MiniMaxConfig, MiniMaxForCausalLM
from mmx.model.generate import decode_step, generate, prefill, token_logprobs


@pytest.fixture(scope="module")
def tiny() -> MiniMaxForCausalLM:
    model = MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny"))
    model.config.initializer_range = 0.2  # large weights, so a wrong mask or state shows in the logits
    model.init_weights(seed=1)
    return model.eval()


def _ids(n: int, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 150], ids=lambda c: f"chunk{c}")
def test_chunked_prefill_equals_one_pass(tiny: MiniMaxForCausalLM, chunk: int) -> None:
    ids = _ids(150, seed=0, batch=2)  # the kernel tiles by 64: several blocks, a ragged last one
    with torch.no_grad():
        full = tiny(ids)
    cache = tiny.new_cache(2)
    last = prefill(tiny, ids, cache, chunk_size=chunk)
    assert cache.lengths == [150, 150]
    assert (last - full[:, -1]).abs().max().item() < 1e-4


def test_decode_after_prefill_equals_full_forward(tiny: MiniMaxForCausalLM) -> None:
    ids = _ids(90, seed=1, batch=2)
    with torch.no_grad():
        full = tiny(ids)
    cache = tiny.new_cache(2)
    logits = [prefill(tiny, ids[:, :80], cache, chunk_size=33)]
    logits += [decode_step(tiny, ids[:, t], cache) for t in range(80, 89)]
    assert (torch.stack(logits, dim=1) - full[:, 79:89]).abs().max().item() < 1e-4


def test_ragged_rows_attend_to_their_own_lengths(tiny: MiniMaxForCausalLM) -> None:
    """Rows holding different numbers of tokens, then several more tokens each (the explicit-mask path)."""
    a, b = _ids(30, seed=2), _ids(55, seed=3)
    cache = tiny.new_cache(2)
    for row, ids in enumerate((a[:, :25], b[:, :50])):
        single = tiny.new_cache(1)
        prefill(tiny, ids, single)
        cache.load_row(row, single)
    with torch.no_grad():
        batched = tiny(torch.cat([a[:, 25:], b[:, 50:]]), cache=cache)
        alone = torch.cat([tiny(a)[:, 25:], tiny(b)[:, 50:]])
    assert cache.lengths == [30, 55]
    assert (batched - alone).abs().max().item() < 1e-4


def test_batched_generation_equals_one_at_a_time(tiny: MiniMaxForCausalLM) -> None:
    prompts = [_ids(n, seed=10 + n)[0].tolist() for n in (5, 41, 17, 1)]
    singles = [generate(tiny, [p], 12)[0] for p in prompts]
    assert generate(tiny, prompts, 12, chunk_size=16) == singles
    assert all(len(s) == 12 for s in singles)


def test_generation_stops_at_ids_and_sequences(tiny: MiniMaxForCausalLM) -> None:
    prompt = _ids(20, seed=4)[0].tolist()
    free = generate(tiny, [prompt], 10)[0]
    stop_id = free[3]
    cut = free.index(stop_id)
    assert generate(tiny, [prompt], 10, stop_ids=[stop_id])[0] == free[:cut]
    seq = free[5:7]
    at = next(i for i in range(len(free) - 1) if free[i : i + 2] == seq)
    assert generate(tiny, [prompt, prompt[:9]], 10, stop_sequences=[seq])[0] == free[:at]
    assert generate(tiny, [prompt], 0) == [[]]


def test_token_logprobs_match_the_full_forward(tiny: MiniMaxForCausalLM) -> None:
    ids = _ids(70, seed=5)
    with torch.no_grad():
        ref = torch.log_softmax(tiny(ids)[0, :-1], dim=-1)  # [69, V]: position t predicts token t + 1
    start = 52
    want = ref[start - 1 :].gather(1, ids[0, start:, None])[:, 0]
    for chunk in (8, 51, 100):
        logprobs, greedy = token_logprobs(tiny, ids[0].tolist(), start, chunk_size=chunk)
        assert torch.allclose(torch.tensor(logprobs), want, atol=1e-4)
        assert greedy == (ref[start - 1 :].argmax(-1) == ids[0, start:]).tolist()
    assert token_logprobs(tiny, [1, 2, 3], 3) == ([], [])


def test_fixed_shape_decode_steps_equal_plain_ones(tiny: MiniMaxForCausalLM) -> None:
    """The CUDA-graph step's computation (K/V written at device-side positions, attention over the whole buffer with
    later keys masked), run eagerly: the same tokens as plain decode steps, for rows of different lengths."""
    from mmx.model.generate import FixedDecoder

    prompts = [_ids(n, seed=20 + n)[0].tolist() for n in (9, 33, 20)]
    steps = 7
    caches = []
    for _ in range(2):
        cache = tiny.new_cache(len(prompts))
        cache.reserve(40 + steps + 5)  # buffers longer than any row: the keys past each row must stay masked
        for row, prompt in enumerate(prompts):
            single = tiny.new_cache(1)
            prefill(tiny, torch.tensor([prompt]), single)
            cache.load_row(row, single)
        caches.append(cache)
    plain, fixed = caches
    decoder = FixedDecoder(tiny, fixed, graphs=False)
    tokens = torch.tensor([p[-1] for p in prompts])
    a = b = tokens
    for _ in range(steps):
        a = decode_step(tiny, a, plain).argmax(dim=-1)
        b = decoder(b)
        assert torch.equal(a, b)
    assert fixed.lengths == plain.lengths == [n + steps for n in (9, 33, 20)]


@pytest.mark.gpu
def test_graph_replayed_decoding_equals_eager_decoding() -> None:
    from mmx.model.backends.base import load_backend
    from mmx.model.generate import FixedDecoder

    model = load_backend("mmx-mini").model  # bf16 on CUDA, packed experts
    prompts = [_ids(n, seed=30 + n)[0].tolist() for n in (700, 2000, 1500)]
    eager = generate(model, prompts, 24, chunk_size=1024)  # noqa: F841 - warms every kernel up
    torch.cuda.synchronize()
    caches = []
    for _ in range(2):
        cache = model.new_cache(len(prompts))
        cache.reserve(2000 + 40)
        for row, prompt in enumerate(prompts):
            single = model.new_cache(1)
            prefill(model, torch.tensor([prompt], device="cuda"), single, 1024)
            cache.load_row(row, single)
        caches.append(cache)
    replayed, stepped = FixedDecoder(model, caches[0]), FixedDecoder(model, caches[1], graphs=False)
    a = b = torch.tensor([p[-1] for p in prompts], device="cuda")
    for _ in range(30):
        a, b = replayed(a), stepped(b)
        assert torch.equal(a, b)
    assert replayed.graph is not None  # the steps after the first were replays
