"""GPU-only checks at the sizes the kernels exist for: a million tokens, bf16 training through autocast, big decode."""

from __future__ import annotations

import pytest
import torch

from mmx.kernels import lightning_attn, lightning_decode
from mmx.kernels.testing import minimax_slopes, random_qkv, rel_rms

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("seqlen", [2**20, 2**20 + 17], ids=["T1M", "T1M+17"])
def test_million_tokens_fp32_match_torch_path(seqlen: int) -> None:
    """fp32 over ≥ 1M tokens with slow decays (late layer): the state carries across ~a thousand segments."""
    torch.manual_seed(0)
    H, D = 2, 64
    q, k, v = random_qkv(1, seqlen, H, D, device="cuda", scale=0.2)
    slope = minimax_slopes(H, layer=78, device="cuda")
    h0 = torch.randn(1, H, D, D, device="cuda")
    o_ref, s_ref = lightning_attn(q, k, v, slope, initial_state=h0, output_final_state=True, impl="torch")
    o, s = lightning_attn(q, k, v, slope, initial_state=h0, output_final_state=True, impl="triton")
    assert rel_rms(o, o_ref) < 1e-4
    assert rel_rms(s, s_ref) < 1e-4


def test_long_bf16_matches_fp32_torch_path() -> None:
    torch.manual_seed(1)
    H, D, T = 4, 128, 2**18
    q, k, v = random_qkv(1, T, H, D, device="cuda", dtype=torch.bfloat16, scale=0.2)
    slope = minimax_slopes(H, device="cuda")
    o_ref, _ = lightning_attn(q.float(), k.float(), v.float(), slope, impl="torch")
    o, _ = lightning_attn(q, k, v, slope)
    assert rel_rms(o, o_ref) < 1.5e-2


def test_packed_training_step_under_bf16_autocast() -> None:
    """A projection → lightning attention → loss step, packed documents, bf16 autocast: weight gradients match fp32."""
    torch.manual_seed(2)
    H, D, C = 4, 64, 96
    lengths = [1, 3000, 517, 4096, 1]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda")
    x = torch.randn(1, sum(lengths), C, device="cuda")
    proj = torch.nn.Linear(C, 3 * H * D, bias=False, device="cuda")
    slope = minimax_slopes(H, device="cuda")

    def weight_grad(impl: str, autocast: bool) -> torch.Tensor:
        proj.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            qkv = torch.nn.functional.silu(proj(x)).view(1, -1, H, 3 * D)  # [1, T, H, 3D]
            q, k, v = qkv.split(D, dim=-1)
            o, _ = lightning_attn(q, k, v, slope, cu_seqlens=cu, impl=impl)
            loss = o.float().square().mean()
        loss.backward()
        return proj.weight.grad.clone()

    assert rel_rms(weight_grad("auto", True), weight_grad("torch", False)) < 3e-2


def test_decode_batch64_matches_torch_path() -> None:
    torch.manual_seed(3)
    B, H, D = 64, 8, 128
    slope = minimax_slopes(H, device="cuda")
    pool = torch.randn(2 * B, H, D, D, device="cuda")
    index = torch.randperm(2 * B, device="cuda")[:B]
    ours, ref = pool.clone(), pool.clone()
    q, k, v = (x[:, 0] for x in random_qkv(B, 1, H, D, device="cuda", dtype=torch.bfloat16))
    o = lightning_decode(q, k, v, slope, ours, state_index=index)
    o_ref = lightning_decode(q, k, v, slope, ref, state_index=index, impl="torch")
    assert rel_rms(o, o_ref) < 1e-2
    assert rel_rms(ours, ref) < 1e-6
