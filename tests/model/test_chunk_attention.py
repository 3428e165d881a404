"""Prefill-chunk attention behind a cache: every path equals the softmax over a materialised lower-right causal mask."""

from __future__ import annotations

import math

import pytest
import torch

from mmx.model import MiniMaxConfig, MiniMaxForCausalLM
from mmx.model import chunk_attention as ca
from mmx.model.generate import prefill

# (batch, chunk queries T, cached keys P, query heads H, key/value heads KV, head size D)
SHAPES = {
    "gqa-ragged": (2, 13, 50, 6, 2, 16),
    "mqa": (1, 5, 3, 4, 1, 8),
    "one-query": (1, 1, 9, 4, 2, 8),
    "mha-long": (1, 63, 500, 4, 4, 32),
}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}  # outputs of size ~1; fp32 merges add rounding


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention in fp64 with the [T, S] mask written out: query t sees keys 0 … S − T + t."""
    T, H, D = q.shape[1:]
    S, KV = k.shape[1:3]
    keys = k.double().repeat_interleave(H // KV, dim=2)  # [B, S, H, D]
    values = v.double().repeat_interleave(H // KV, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.double(), keys) / math.sqrt(D)  # [B, H, T, S]
    visible = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(S - T)
    weights = scores.masked_fill(~visible, -math.inf).softmax(dim=-1)
    return torch.einsum("bhts,bshd->bthd", weights, values)  # [B, T, H, D]


def inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    B, T, P, H, KV, D = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=gen, dtype=dtype)
    k = torch.randn(B, P + T, KV, D, generator=gen, dtype=dtype) * 2  # spread scores: the softmax is far from flat
    v = torch.randn(B, P + T, KV, D, generator=gen, dtype=dtype)
    return q, k, v


def error(out: torch.Tensor, expected: torch.Tensor) -> float:
    return (out.double() - expected).abs().max().item()


class BlockKernel:
    """A stand-in for cuDNN on the CPU: no grouped-query heads, blocked keys, and only even key counts (so some
    blocks need the next kernel of the order). Records the shapes it runs."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, bool]] = []  # (query heads, query rows, keys, causal)

    def attend(self, q, k, v, causal, scale):
        assert q.shape[1] == k.shape[1], "given grouped heads it does not take"
        self.calls.append((q.shape[1], q.shape[2], k.shape[2], causal))
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)

    @staticmethod
    def usable(q, k, v, causal) -> bool:
        return k.shape[2] % 2 == 0


@pytest.fixture
def block_kernel(monkeypatch) -> BlockKernel:
    """BlockKernel registered as kernel "block"."""
    stand_in = BlockKernel()
    monkeypatch.setitem(ca.KERNELS, "block", ca.Kernel("block", stand_in.attend, stand_in.usable, False, True))
    return stand_in


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_path_equals_the_materialised_mask(shape, dtype, block_kernel):
    q, k, v = inputs(shape, dtype)
    expected = reference(q, k, v)
    for name, out in [
        ("masked", ca.masked_attention(q, k, v)),
        ("split", ca.split_attention(q, k, v)),
        ("split, blocks", ca.split_attention(q, k, v, order=("block", "cpu"), key_block=16)),
    ]:
        assert out.shape == q.shape and out.dtype == dtype, name
        assert error(out, expected) < TOLERANCE[dtype], name


def test_a_blocked_kernel_gets_folded_rows_blocks_and_a_repeated_square(block_kernel):
    B, T, P, H, KV, D = 1, 6, 64 * 3 + 41, 6, 2, 8  # three full blocks, then 41 keys it cannot take
    q, k, v = inputs((B, T, P, H, KV, D), torch.float64)
    out = ca.split_attention(q, k, v, order=("block", "cpu"), key_block=64)
    assert error(out, reference(q, k, v)) < 1e-12
    square, *cached = block_kernel.calls
    assert square == (H, T, T, True)  # K/V repeated to every query head for the causal square
    # without a mask, the query heads of one key head are rows of one call; the odd 41 keys went to "cpu"
    assert cached == [(KV, H // KV * T, 64, False)] * 3


def test_an_unblocked_kernel_takes_all_cached_keys_in_one_call(monkeypatch):
    calls = []
    cpu = ca.KERNELS["cpu"]
    counting = ca.Kernel("cpu", lambda *a: calls.append(a[1].shape[2]) or cpu.attend(*a), cpu.usable, True, False)
    monkeypatch.setitem(ca.KERNELS, "cpu", counting)
    q, k, v = inputs(SHAPES["mha-long"], torch.float32)
    ca.split_attention(q, k, v, key_block=64)
    assert calls == [63, 500]  # the causal square, then the 500 cached keys at once


def test_no_usable_kernel_falls_back_to_the_masked_path(monkeypatch):
    q, k, v = inputs(SHAPES["gqa-ragged"], torch.float32)
    calls = []
    masked = ca.masked_attention
    monkeypatch.setattr(ca, "masked_attention", lambda *a: calls.append(1) or masked(*a))
    out = ca.split_attention(q, k, v, order=("cudnn", "flash", "efficient"))  # CUDA kernels on CPU tensors
    assert calls == [1] and error(out, reference(q, k, v)) < TOLERANCE[torch.float32]


@pytest.mark.parametrize(("length", "block", "smallest"), [(0, 64, 16), (5, 64, 16), (64, 64, 16), (1000, 64, 16)])
def test_key_pieces_cover_the_range_in_order(length, block, smallest):
    pieces = ca.key_pieces(length, block, smallest)
    ends = [0] + [b for _, b in pieces]
    assert [a for a, _ in pieces] == ends[:-1] and ends[-1] == length  # back to back from 0 to length
    sizes = [b - a for a, b in pieces]
    assert all(0 < s <= block for s in sizes) and sizes == sorted(sizes, reverse=True)


def test_a_long_prefill_meets_five_key_shapes():
    """With 4096-token chunks and 65536-key blocks, the cached keys of any chunk split into five sizes at most."""
    sizes = {b - a for c in range(1, 257) for a, b in ca.key_pieces(4096 * c, 65536)}
    assert sizes == {65536, 32768, 16384, 8192, 4096}


def test_prefill_path_is_scoped_and_checked():
    assert ca.current_prefill_path() == ca.DEFAULT_PREFILL_PATH
    with ca.prefill_path("masked"):
        with ca.prefill_path("split"):
            assert ca.current_prefill_path() == "split"
        assert ca.current_prefill_path() == "masked"
    assert ca.current_prefill_path() == ca.DEFAULT_PREFILL_PATH
    with pytest.raises(ValueError, match="unknown prefill attention path 'fast'"), ca.prefill_path("fast"):
        pass


@pytest.mark.parametrize("path", ca.PREFILL_PATHS)
def test_a_chunked_prefill_through_each_path_equals_one_forward(path, monkeypatch):
    model = MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny"))  # GQA: 4 query heads on 2 key/value heads
    model.config.initializer_range = 0.2
    model.init_weights(seed=0)
    ids = torch.randint(0, 259, (1, 45), generator=torch.Generator().manual_seed(0))
    split_calls = []
    split = ca.split_attention
    monkeypatch.setattr(ca, "split_attention", lambda *a: split_calls.append(1) or split(*a))
    with torch.no_grad(), ca.prefill_path(path):
        whole = model(ids)[:, -1]
        last = prefill(model, ids, model.new_cache(1), chunk_size=7)  # 6 chunks behind a cache, the last ragged
    assert (last - whole).abs().max().item() < 1e-4
    assert len(split_calls) == (6 if path == "split" else 0)


def test_cudnn_sees_one_row_of_the_cache_with_a_stride_set_by_its_shape_not_the_capacity():
    views = [torch.randn(1, capacity, 2, 8)[:, :300].transpose(1, 2) for capacity in (300, 1000)]  # [1, KV, S, D]
    packed = [ca._packed_batch_stride(x) for x in views]
    assert views[0].stride() != views[1].stride() and packed[0].stride() == packed[1].stride() == (4800, 8, 16, 1)
    assert all(torch.equal(p, x) for p, x in zip(packed, views, strict=True))
    rows = torch.randn(2, 2, 10, 8)
    assert ca._packed_batch_stride(rows) is rows  # several rows keep their layout


CUDA_SHAPES = {
    "aligned": (1, 512, 4096 * 2 + 1024, 8, 2, 128),  # lengths cuDNN takes: blocks, then pieces of 1024
    "ragged": (1, 300, 5000, 8, 2, 64),  # lengths off multiples of 128: cuDNN steps aside
}


@pytest.mark.gpu
@pytest.mark.parametrize("shape", CUDA_SHAPES.values(), ids=CUDA_SHAPES.keys())
def test_each_cuda_kernel_equals_the_materialised_mask(shape, monkeypatch):
    calls: list[str] = []
    for name, kernel in list(ca.KERNELS.items()):
        counted = lambda *a, name=name, attend=kernel.attend: calls.append(name) or attend(*a)  # noqa: E731
        monkeypatch.setitem(ca.KERNELS, name, ca.Kernel(name, counted, kernel.usable, kernel.grouped, kernel.blocked))
    q, k, v = (x.to("cuda", torch.bfloat16) for x in inputs(shape, torch.float32))
    expected = reference(q, k, v)
    for name in ("cudnn", "flash", "efficient"):
        out = ca.split_attention(q, k, v, order=(name,), key_block=4096)  # masked_attention where it cannot
        rel = ((out.double() - expected).norm() / expected.norm()).item()
        assert rel < 1e-2, (name, rel)  # bf16 outputs round at ~3e-3
    assert "flash" in calls
    if shape[2] % 128:
        assert "cudnn" not in calls
