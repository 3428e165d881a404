"""Triton one-token decode: S ← λ S + kᵀ v in place in an fp32 state pool, o = q S, one pass over the state.

Decode is bound by the state's bytes (read once, written once), so each program owns a [K, BV] slab of one
sequence's state for one head and does all of its work in registers. `state_index` maps batch row b to its row of
the pool; a row outside the pool leaves the pool untouched and gives NaN outputs, so a bad index fails loudly
instead of writing over memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _decode_kernel(
    q,
    k,
    v,
    o,
    slope,
    state,
    state_index,
    n_pool,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_vb,
    stride_vh,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    HAS_INDEX: tl.constexpr,
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    i_v = tl.program_id(2)
    row = tl.load(state_index + i_b).to(tl.int64) if HAS_INDEX else i_b.to(tl.int64)
    valid = (row >= 0) & (row < n_pool)
    o_k = tl.arange(0, K)
    o_v = i_v * BV + tl.arange(0, BV)
    s = tl.load(slope + i_h).to(tl.float32)
    b_q = tl.load(q + i_b * stride_qb + i_h * stride_qh + o_k).to(tl.float32)  # [K]
    b_k = tl.load(k + i_b * stride_kb + i_h * stride_kh + o_k).to(tl.float32)  # [K]
    b_v = tl.load(v + i_b * stride_vb + i_h * stride_vh + o_v).to(tl.float32)  # [BV]
    p_h = state + (row * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :]  # [K, BV]
    b_h = tl.load(p_h, mask=valid, other=0.0)
    b_h = b_h * tl.exp(-s) + b_k[:, None] * b_v[None, :]
    tl.store(p_h, b_h, mask=valid)
    b_o = tl.sum(b_q[:, None] * b_h, axis=0)  # [BV]
    b_o = tl.where(valid, b_o, float("nan"))
    tl.store(o + (i_b * H + i_h) * V + o_v, b_o.to(o.dtype.element_ty))


def decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    state: torch.Tensor,
    state_index: torch.Tensor | None,
    block_v: int,
) -> torch.Tensor:
    """q, k: [B, H, K], v: [B, H, V] (last dim contiguous); state: contiguous fp32 [N, H, K, V], updated in place."""
    B, H, K = q.shape
    V = v.shape[-1]
    BV = min(block_v, V)
    o = torch.empty(B, H, V, dtype=q.dtype, device=q.device)
    _decode_kernel[(B, H, triton.cdiv(V, BV))](
        q, k, v, o, slope, state, state_index if state_index is not None else state, state.shape[0],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        H=H, K=K, V=V, BV=BV, HAS_INDEX=state_index is not None,
        num_warps=4 if K * BV >= 4096 else 2,
    )  # fmt: skip
    return o
