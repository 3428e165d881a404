"""The ground truth and the PyTorch path: the recurrence, the materialised mask, the chunked blocks, the plan."""

from __future__ import annotations

import pytest
import torch

from mmx.kernels import chunk_lightning, lightning_attn, naive_masked, naive_recurrence, naive_recurrence_grads
from mmx.kernels.plan import KernelConfig, build_plan, choose_segment, forward_segment
from mmx.kernels.testing import minimax_slopes, random_qkv, rel_rms

FP32_TOL = 1e-5  # relative RMS; fp32 arithmetic in a different order lands near 1e-7


def test_recurrence_matches_materialised_mask() -> None:
    torch.manual_seed(0)
    q, k, v = random_qkv(2, 37, 3, 8, 5)
    slope = minimax_slopes(3)
    o, _ = naive_recurrence(q, k, v, slope)
    assert rel_rms(naive_masked(q, k, v, slope), o) < FP32_TOL


def test_recurrence_first_steps_by_hand() -> None:
    """Two tokens, one head, D = 1: S1 = k1 v1, S2 = λ S1 + k2 v2, o_t = q_t S_t."""
    q, k, v = (torch.tensor([[[[a]], [[b]]]]) for a, b in ((2.0, 3.0), (5.0, 7.0), (11.0, 13.0)))
    slope = torch.tensor([0.5])
    lam = torch.exp(torch.tensor(-0.5))
    o, state = naive_recurrence(q, k, v, slope)
    s1 = 5.0 * 11.0
    s2 = lam * s1 + 7.0 * 13.0
    assert torch.allclose(o.flatten(), torch.stack([torch.tensor(2.0 * s1), 3.0 * s2]))
    assert torch.allclose(state.flatten(), s2.reshape(1))


@pytest.mark.parametrize("seqlen", [1, 63, 64, 65, 257, 1000], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("block", [16, 64], ids=lambda b: f"block{b}")
def test_chunk_matches_recurrence(seqlen: int, block: int) -> None:
    torch.manual_seed(seqlen)
    q, k, v = random_qkv(2, seqlen, 2, 16, 8)
    slope = minimax_slopes(2)
    h0 = torch.randn(2, 2, 16, 8)
    o_ref, s_ref = naive_recurrence(q, k, v, slope, h0)
    o, s = chunk_lightning(q, k, v, slope, h0, block_size=block)
    assert rel_rms(o, o_ref) < FP32_TOL
    assert rel_rms(s, s_ref) < FP32_TOL


def test_chunk_groups_carry_the_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sequence longer than one group of blocks gives the same answer as one group."""
    torch.manual_seed(1)
    q, k, v = random_qkv(1, 300, 2, 8)
    slope = minimax_slopes(2, layer=70)  # slow decay: the carried state matters
    o_one, s_one = chunk_lightning(q, k, v, slope, block_size=16)
    monkeypatch.setattr("mmx.kernels.torch_chunked.GROUP_ROWS", 32)
    o_many, s_many = chunk_lightning(q, k, v, slope, block_size=16)
    assert rel_rms(o_many, o_one) < FP32_TOL
    assert rel_rms(s_many, s_one) < FP32_TOL


def _autograd(impl: str, inputs: list[torch.Tensor], slope: torch.Tensor, cotangents: list[torch.Tensor]) -> list:
    leaves = [x.clone().requires_grad_() for x in inputs]
    o, s = lightning_attn(*leaves[:3], slope, initial_state=leaves[3], output_final_state=True, impl=impl)
    torch.autograd.backward([o, s], cotangents)
    return [x.grad for x in leaves]


def test_recurrence_grads_match_autograd() -> None:
    """The hand-written reverse recurrence equals autograd through the forward recurrence."""
    torch.manual_seed(2)
    q, k, v = random_qkv(2, 40, 2, 8, 4)
    h0 = torch.randn(2, 2, 8, 4)
    slope = minimax_slopes(2)
    go, gs = torch.randn(2, 40, 2, 4), torch.randn(2, 2, 8, 4)
    by_hand = naive_recurrence_grads(q, k, v, slope, h0, go, gs)
    for got, want in zip(by_hand, _autograd("naive", [q, k, v, h0], slope, [go, gs]), strict=True):
        assert rel_rms(got, want) < FP32_TOL


def test_torch_path_gradients_match_recurrence() -> None:
    torch.manual_seed(2)
    q, k, v = random_qkv(1, 150, 2, 8)
    h0 = torch.randn(1, 2, 8, 8)
    slope = minimax_slopes(2)
    go, gs = torch.randn(1, 150, 2, 8), torch.randn(1, 2, 8, 8)
    want = naive_recurrence_grads(q, k, v, slope, h0, go, gs)
    for got, w in zip(_autograd("torch", [q, k, v, h0], slope, [go, gs]), want, strict=True):
        assert rel_rms(got, w) < FP32_TOL


def test_packed_sequences_restart_the_state() -> None:
    torch.manual_seed(3)
    lengths = [5, 1, 0, 40]
    q, k, v = random_qkv(1, sum(lengths), 2, 8)
    slope = minimax_slopes(2)
    cu = torch.tensor([0, 5, 6, 6, 46])
    o, s = lightning_attn(q, k, v, slope, cu_seqlens=cu, output_final_state=True, impl="torch")
    start = 0
    for i, n in enumerate(lengths):
        piece = slice(start, start + n)
        o_ref, s_ref = naive_recurrence(q[:, piece], k[:, piece], v[:, piece], slope)
        if n:
            assert rel_rms(o[:, piece], o_ref) < FP32_TOL
        assert torch.allclose(s[i], s_ref[0], atol=1e-6)
        start += n


def test_plan_cuts_sequences_at_boundaries() -> None:
    plan = build_plan([5, 0, 12, 4], segment=4, device=torch.device("cpu"))
    assert plan.seg_bos.tolist() == [0, 4, 5, 9, 13, 17]
    assert plan.seg_len.tolist() == [4, 1, 4, 4, 4, 4]
    assert plan.seg_seq.tolist() == [0, 0, 2, 2, 2, 3]
    assert plan.seq_ptr.tolist() == [0, 2, 2, 5, 6]
    assert plan.local_segs.tolist() == [0, 2, 3]
    assert plan.empty_seqs == (1,)
    assert plan.multi


def test_segment_size_fills_the_device() -> None:
    config = KernelConfig(chunk=64, programs_per_sm=4, max_segment=16384)
    # 132 multiprocessors, 8 heads: ≥ 528 programs wanted, i.e. ≥ 66 segments
    assert choose_segment(2**18, 8, 64, 132, config) == 2048  # 128 segments; 4096 would give only 64
    assert choose_segment(4 * 2**20, 8, 64, 132, config) == 16384  # capped by max_segment
    assert choose_segment(1000, 8, 64, 132, config) == 64
    assert choose_segment(1000, 8, 64, 132, config.with_(segment=320)) == 320


def test_forward_only_segments_shorten_the_scan_at_short_lengths() -> None:
    """Inference plans (no backward) trade the scan's chain of steps against parallel work, by the H200's measured
    per-block costs; long sequences keep the training plan, which was measured."""
    bf16, config = torch.bfloat16, KernelConfig()
    segment = lambda t, h: forward_segment((t,), h, 128, bf16, 132, config)  # noqa: E731
    assert segment(4096, 8) == 256 > choose_segment(4096, 8, 128, 132, config) == 128  # 16 scan steps, not 32
    assert segment(65536, 8) == 2048  # 32 steps instead of 128; 256 programs, still two per multiprocessor
    for t, h in ((2**22, 8), (2**20, 64)):
        assert segment(t, h) == choose_segment(t, h, 128, 132, config)
    assert forward_segment((4096,), 8, 128, bf16, 132, config.with_(segment=320)) == 320
    rows = (64,) * 512  # many short rows: one segment each, so the outputs kernel is the only launch
    assert not build_plan(rows, forward_segment(rows, 8, 128, bf16, 132, config), torch.device("cpu")).multi


def test_steep_heads_are_read_once_per_slope_tensor() -> None:
    from mmx.kernels.triton_fwd import has_steep_heads, output_walks

    gentle = torch.tensor([0.1, 0.5])
    assert not has_steep_heads(gentle, 128)
    assert has_steep_heads(gentle, 256)  # 0.5 · 129 > 40
    gentle.mul_(10)  # changed in place: read again
    assert has_steep_heads(gentle, 128)
    factored = KernelConfig()
    assert output_walks(factored, torch.bfloat16, steep=False) == (1,)
    assert output_walks(factored, torch.bfloat16, steep=True) == (1, 2)
    assert output_walks(factored, torch.float16, steep=False) == (0,)
