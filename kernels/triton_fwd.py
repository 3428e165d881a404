"""Triton prefill forward: local segment states, the segment scan, then outputs with the state held on chip.

Per segment and head, a program walks the segment's blocks of BT rows in order. For a block of m rows
(i, j the rows inside it, λ = exp(-slope)):
  o = ((Q Kᵀ) ⊙ M) V + (Q ⊙ λ^(i+1)) S        M_ij = λ^(i-j) for i ≥ j, else 0
  S ← λ^m S + (K ⊙ λ^(m-1-j))ᵀ V
so q, k, v are read once and o written once. The start state S of each segment comes from `_local_state_kernel`
(each segment's own contribution, in parallel) and `triton_scan.scan_segments` (a short sequential pass over the
segments of each sequence). Everything about decays and states is fp32; products take the input dtype, except that
the state is multiplied in fp32 unless inputs are bf16 (fp16 cannot hold a long sum of k vᵀ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from .plan import KernelConfig, SegmentPlan
from .triton_scan import scan_segments

R = TypeVar("R")
_FITTED: dict[tuple, KernelConfig] = {}  # (phase, head dims, dtype, device, asked config) -> config that fits


@triton.jit
def _intra_mask(s, BT: tl.constexpr):
    """[BT, BT] decay mask M_ij = λ^(i-j) for i ≥ j, else 0."""
    o_t = tl.arange(0, BT)
    dist = o_t[:, None] - o_t[None, :]
    return tl.where(dist >= 0, tl.exp(-s * tl.maximum(dist, 0).to(tl.float32)), 0.0)


@triton.jit
def _key_decay(s, m, BT: tl.constexpr):
    """[BT] decay λ^(m-1-j) of row j to the end of a block of m rows; 0 for the rows past m (never inf)."""
    o_t = tl.arange(0, BT)
    return tl.where(o_t < m, tl.exp(-s * tl.maximum(m - 1 - o_t, 0).to(tl.float32)), 0.0)


@triton.jit
def _local_state_kernel(
    k,
    v,
    slope,
    states,
    local_segs,
    seg_bos,
    seg_len,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    """states[seg] = Σ_j λ^(len-1-j) k_jᵀ v_j over the segment's rows (its state started from zero)."""
    i_s = tl.load(local_segs + tl.program_id(0))
    i_h = tl.program_id(1)
    i_v = tl.program_id(2)
    bos = tl.load(seg_bos + i_s).to(tl.int64)
    n_rows = tl.load(seg_len + i_s)
    s = tl.load(slope + i_h).to(tl.float32)
    p_k0 = k + bos * stride_kt + i_h * stride_kh
    p_v0 = v + bos * stride_vt + i_h * stride_vh
    b_h = tl.zeros([K, BV], dtype=tl.float32)
    for i_c in range(0, tl.cdiv(n_rows, BT)):
        p_k = tl.make_block_ptr(p_k0, (n_rows, K), (stride_kt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_v = tl.make_block_ptr(p_v0, (n_rows, V), (stride_vt, 1), (i_c * BT, i_v * BV), (BT, BV), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0,), padding_option="zero")  # [BT, K]
        b_v = tl.load(p_v, boundary_check=(0,), padding_option="zero")  # [BT, BV]
        m = tl.minimum(BT, n_rows - i_c * BT)
        b_kd = (b_k * _key_decay(s, m, BT)[:, None]).to(b_k.dtype)
        b_h = b_h * tl.exp(-s * m.to(tl.float32)) + tl.dot(tl.trans(b_kd), b_v, input_precision=PREC)
    o_k = tl.arange(0, K)
    o_v = i_v * BV + tl.arange(0, BV)
    p_h = states + (i_s * H + i_h).to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    tl.store(p_h, b_h)


@triton.jit
def _output_kernel(
    q,
    k,
    v,
    o,
    slope,
    h_start,
    h_final,
    seg_bos,
    seg_len,
    seg_seq,
    seq_ptr,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    START: tl.constexpr,  # 0: zero state, 1: h_start[sequence], 2: h_start[segment]
    STORE_FINAL: tl.constexpr,
    STATE_BF16: tl.constexpr,
    PREC: tl.constexpr,
):
    """Outputs of one segment (value columns i_v*BV ...) and, for a sequence's last segment, its final state."""
    i_s = tl.program_id(0)
    i_h = tl.program_id(1)
    i_v = tl.program_id(2)
    bos = tl.load(seg_bos + i_s).to(tl.int64)
    n_rows = tl.load(seg_len + i_s)
    i_n = tl.load(seg_seq + i_s)
    s = tl.load(slope + i_h).to(tl.float32)
    o_k = tl.arange(0, K)
    o_v = i_v * BV + tl.arange(0, BV)
    o_kv = o_k[:, None] * V + o_v[None, :]  # [K, BV] offsets inside one [K, V] state
    if START == 1:
        b_h = tl.load(h_start + (i_n * H + i_h).to(tl.int64) * K * V + o_kv)
    elif START == 2:
        b_h = tl.load(h_start + (i_s * H + i_h).to(tl.int64) * K * V + o_kv)
    else:
        b_h = tl.zeros([K, BV], dtype=tl.float32)

    b_mask = _intra_mask(s, BT)
    b_qd = tl.exp(-s * (tl.arange(0, BT) + 1).to(tl.float32))  # [BT] λ^(i+1)
    p_q0 = q + bos * stride_qt + i_h * stride_qh
    p_k0 = k + bos * stride_kt + i_h * stride_kh
    p_v0 = v + bos * stride_vt + i_h * stride_vh
    p_o0 = o + bos * stride_ot + i_h * stride_oh
    for i_c in range(0, tl.cdiv(n_rows, BT)):
        p_q = tl.make_block_ptr(p_q0, (n_rows, K), (stride_qt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_k = tl.make_block_ptr(p_k0, (n_rows, K), (stride_kt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_v = tl.make_block_ptr(p_v0, (n_rows, V), (stride_vt, 1), (i_c * BT, i_v * BV), (BT, BV), (1, 0))
        p_o = tl.make_block_ptr(p_o0, (n_rows, V), (stride_ot, 1), (i_c * BT, i_v * BV), (BT, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0,), padding_option="zero")  # [BT, K]
        b_k = tl.load(p_k, boundary_check=(0,), padding_option="zero")  # [BT, K]
        b_v = tl.load(p_v, boundary_check=(0,), padding_option="zero")  # [BT, BV]
        # the products that involve the carried state go first: they do not wait on this block's scores
        if STATE_BF16:
            b_o = tl.dot((b_q * b_qd[:, None]).to(tl.bfloat16), b_h.to(tl.bfloat16))  # [BT, BV]
        else:
            b_o = tl.dot(b_q.to(tl.float32) * b_qd[:, None], b_h, input_precision=PREC)  # [BT, BV]
        m = tl.minimum(BT, n_rows - i_c * BT)
        b_kd = (b_k * _key_decay(s, m, BT)[:, None]).to(b_k.dtype)
        b_h = b_h * tl.exp(-s * m.to(tl.float32)) + tl.dot(tl.trans(b_kd), b_v, input_precision=PREC)
        b_a = tl.dot(b_q, tl.trans(b_k), input_precision=PREC) * b_mask  # [BT, BT]
        b_o = tl.dot(b_a.to(b_v.dtype), b_v, acc=b_o, input_precision=PREC)
        tl.store(p_o, b_o.to(o.dtype.element_ty), boundary_check=(0,))
    if STORE_FINAL:
        is_last = i_s == tl.load(seq_ptr + i_n + 1) - 1
        tl.store(h_final + (i_n * H + i_h).to(tl.int64) * K * V + o_kv, b_h, mask=is_last)


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get three-pass tf32 (close to fp32); 16-bit inputs ignore this."""
    return "tf32x3" if dtype == torch.float32 else "tf32"


def rows_view(x: torch.Tensor) -> tuple[int, int]:
    """(row stride, head stride) of a [B, T, H, D] tensor whose batch and time axes flatten to one row axis."""
    return x.stride(1), x.stride(2)


def fitting(phase: str, launch: Callable[[KernelConfig], R], config: KernelConfig, x: torch.Tensor, dim_v: int) -> R:
    """Run `launch(config)`; while the GPU lacks the shared memory a launch needs, retry it with smaller blocks
    (KernelConfig.shrink) and remember what fitted, so later calls go straight to it."""
    key = (phase, x.shape[-1], dim_v, x.dtype, x.device, config)
    current = _FITTED.get(key, config)
    while True:
        try:
            result = launch(current)
        except OutOfResources:
            smaller = current.shrink(x.shape[-1], x.dtype, backward=phase.startswith("bwd"))
            if smaller is None:
                raise
            current = smaller
            continue
        _FITTED[key] = current
        return result


def local_states(
    k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, plan: SegmentPlan, config: KernelConfig
) -> tuple[torch.Tensor, object]:
    """Each non-final segment's own state contribution, fp32 [S, H, K, V]; also returns the compiled kernel."""
    _, _, H, K = k.shape
    V = v.shape[-1]
    n_v = config.split(config.value_split, V)
    local = torch.empty(plan.n_segments, H, K, V, dtype=torch.float32, device=k.device)
    kernel = _local_state_kernel[(plan.local_segs.numel(), H, n_v)](
        k, v, slope, local, plan.local_segs, plan.seg_bos, plan.seg_len,
        *rows_view(k), *rows_view(v),
        H=H, K=K, V=V, BT=config.fwd_chunk(K, k.dtype), BV=V // n_v, PREC=dot_precision(k.dtype),
        num_warps=config.warps(config.fwd_warps, K * V // n_v), num_stages=config.fwd_stages,
    )  # fmt: skip
    return local, kernel


def outputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    h_start: torch.Tensor | None,
    per_segment: bool,
    plan: SegmentPlan,
    config: KernelConfig,
    final: torch.Tensor | None,
) -> tuple[torch.Tensor, object]:
    """o [B, T, H, V] from start states (per segment, per sequence, or zero when `h_start` is None).

    Writes each sequence's final state into `final` when given; also returns the compiled kernel.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    n_v = config.split(config.value_split, V)
    o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    start_mode = 0 if h_start is None else (2 if per_segment else 1)
    kernel = _output_kernel[(plan.n_segments, H, n_v)](
        q, k, v, o, slope, h_start if h_start is not None else o, final if final is not None else o,
        plan.seg_bos, plan.seg_len, plan.seg_seq, plan.seq_ptr,
        *rows_view(q), *rows_view(k), *rows_view(v), *rows_view(o),
        H=H, K=K, V=V, BT=config.fwd_chunk(K, k.dtype), BV=V // n_v, START=start_mode, STORE_FINAL=final is not None,
        STATE_BF16=q.dtype == torch.bfloat16, PREC=dot_precision(q.dtype),
        num_warps=config.warps(config.fwd_warps, K * V // n_v), num_stages=config.fwd_stages,
    )  # fmt: skip
    return o, kernel


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None,
    plan: SegmentPlan,
    config: KernelConfig,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run the forward kernels; returns (o, final_state or None, per-segment start states or None).

    The start states are kept for the backward pass; they are None when every sequence is one segment (its start
    state is then the initial state, or zero).
    """
    _, _, H, K = q.shape
    V = v.shape[-1]
    final = torch.empty(plan.n_seqs, H, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    starts = None
    if plan.multi:
        local, _ = fitting("fwd_local", lambda c: local_states(k, v, slope, plan, c), config, k, V)
        starts, _ = scan_segments(local, initial_state, slope, plan, reverse=False)
    h_start = starts if plan.multi else initial_state
    o, _ = fitting("fwd_out", lambda c: outputs(q, k, v, slope, h_start, plan.multi, plan, c, final), config, q, V)
    if final is not None and plan.empty_seqs:
        empty = torch.tensor(plan.empty_seqs, device=q.device)
        final[empty] = initial_state[empty].float() if initial_state is not None else 0.0
    return o, final, starts
