"""Triton backward: dq walking forward in time, dk and dv walking backward, segments in parallel.

With dS_t the gradient of the state S_t (dS_t = q_tᵀ do_t + λ dS_{t+1}):
  dq_t = do_t S_tᵀ           — the forward recurrence again, with (do, v, k) in the roles of (q, k, v);
  dk_t = v_t dS_tᵀ, dv_t = k_t dS_t — the same recurrence run backward in time, sharing one carried dS.
`_dq_kernel` walks each segment forward from the start states the forward pass kept; on the way it also sums the
segment's own reverse contribution R = Σ_i λ^(i+1) q_iᵀ do_i (i counted from the segment start), so the reverse
scan can give every segment the gradient arriving from after it without another read of q and do.
`_dkv_kernel` then walks each segment backward; within a block of m rows, with C the gradient arriving from after it:
  dV = ((K Qᵀ) ⊙ Mᵀ) dO + (K ⊙ λ^(m-1-j)) C      dK = ((V dOᵀ) ⊙ Mᵀ) Q + (V ⊙ λ^(m-1-j)) Cᵀ
  C ← λ^m C + (Q ⊙ λ^(i+1))ᵀ dO
and what is left in C after a sequence's first block is the initial state's gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .plan import KernelConfig, SegmentPlan
from .triton_fwd import _intra_mask, _key_decay, dot_precision, fitting, rows_view
from .triton_scan import scan_segments


@triton.jit
def _dq_kernel(
    q,
    k,
    v,
    do,
    dq,
    slope,
    h_start,
    r_states,
    seg_bos,
    seg_len,
    seg_seq,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    START: tl.constexpr,  # 0: zero state, 1: h_start[sequence], 2: h_start[segment]
    STORE_R: tl.constexpr,
    STATE_BF16: tl.constexpr,
    PREC: tl.constexpr,
):
    """dq[:, key columns i_k*BK ...] of one segment, and the same rows of its reverse contribution R."""
    i_s = tl.program_id(0)
    i_h = tl.program_id(1)
    i_k = tl.program_id(2)
    bos = tl.load(seg_bos + i_s).to(tl.int64)
    n_rows = tl.load(seg_len + i_s)
    i_n = tl.load(seg_seq + i_s)
    s = tl.load(slope + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)
    o_kv = (i_k * BK + tl.arange(0, BK))[:, None] * V + tl.arange(0, V)[None, :]  # [BK, V]
    if START == 1:
        b_h = tl.load(h_start + (i_n * H + i_h).to(tl.int64) * K * V + o_kv)
    elif START == 2:
        b_h = tl.load(h_start + (i_s * H + i_h).to(tl.int64) * K * V + o_kv)
    else:
        b_h = tl.zeros([BK, V], dtype=tl.float32)
    b_r = tl.zeros([BK, V], dtype=tl.float32)

    b_mask = _intra_mask(s, BT)
    b_qd = tl.exp(-s * (o_t + 1).to(tl.float32))  # [BT] λ^(i+1)
    p_q0 = q + bos * stride_qt + i_h * stride_qh
    p_k0 = k + bos * stride_kt + i_h * stride_kh
    p_v0 = v + bos * stride_vt + i_h * stride_vh
    p_do0 = do + bos * stride_dot + i_h * stride_doh
    p_dq0 = dq + bos * stride_dqt + i_h * stride_dqh
    for i_c in range(0, tl.cdiv(n_rows, BT)):
        p_k = tl.make_block_ptr(p_k0, (n_rows, K), (stride_kt, 1), (i_c * BT, i_k * BK), (BT, BK), (1, 0))
        p_v = tl.make_block_ptr(p_v0, (n_rows, V), (stride_vt, 1), (i_c * BT, 0), (BT, V), (1, 0))
        p_do = tl.make_block_ptr(p_do0, (n_rows, V), (stride_dot, 1), (i_c * BT, 0), (BT, V), (1, 0))
        p_dq = tl.make_block_ptr(p_dq0, (n_rows, K), (stride_dqt, 1), (i_c * BT, i_k * BK), (BT, BK), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0,), padding_option="zero")  # [BT, BK]
        b_v = tl.load(p_v, boundary_check=(0,), padding_option="zero")  # [BT, V]
        b_do = tl.load(p_do, boundary_check=(0,), padding_option="zero")  # [BT, V]
        b_a = tl.dot(b_do, tl.trans(b_v), input_precision=PREC) * b_mask  # [BT, BT]
        b_dq = tl.dot(b_a.to(b_k.dtype), b_k, input_precision=PREC)  # [BT, BK]
        if STATE_BF16:
            b_dq += tl.dot((b_do * b_qd[:, None]).to(tl.bfloat16), tl.trans(b_h.to(tl.bfloat16)))
        else:
            b_dq += tl.dot(b_do.to(tl.float32) * b_qd[:, None], tl.trans(b_h), input_precision=PREC)
        tl.store(p_dq, b_dq.to(dq.dtype.element_ty), boundary_check=(0,))
        m = tl.minimum(BT, n_rows - i_c * BT)
        b_kd = (b_k * _key_decay(s, m, BT)[:, None]).to(b_k.dtype)
        b_h = b_h * tl.exp(-s * m.to(tl.float32)) + tl.dot(tl.trans(b_kd), b_v, input_precision=PREC)
        if STORE_R:
            p_q = tl.make_block_ptr(p_q0, (n_rows, K), (stride_qt, 1), (i_c * BT, i_k * BK), (BT, BK), (1, 0))
            b_q = tl.load(p_q, boundary_check=(0,), padding_option="zero")  # [BT, BK]
            b_rd = tl.exp(-s * (i_c * BT + o_t + 1).to(tl.float32))  # [BT] λ^(row in segment + 1)
            b_qr = (b_q * b_rd[:, None]).to(b_q.dtype)
            b_r += tl.dot(tl.trans(b_qr), b_do, input_precision=PREC)  # [BK, V]
    if STORE_R:
        tl.store(r_states + (i_s * H + i_h).to(tl.int64) * K * V + o_kv, b_r)


@triton.jit
def _dkv_kernel(
    q,
    k,
    v,
    do,
    dk,
    dv,
    slope,
    c_start,
    dh0,
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
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    START: tl.constexpr,  # 0: nothing arrives from later, 1: c_start[sequence] (dht), 2: c_start[segment]
    STORE_DH0: tl.constexpr,
    STATE_BF16: tl.constexpr,
    PREC: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_h = tl.program_id(1)
    bos = tl.load(seg_bos + i_s).to(tl.int64)
    n_rows = tl.load(seg_len + i_s)
    i_n = tl.load(seg_seq + i_s)
    s = tl.load(slope + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)
    o_kv = tl.arange(0, K)[:, None] * V + tl.arange(0, V)[None, :]  # [K, V]
    if START == 1:
        b_c = tl.load(c_start + (i_n * H + i_h).to(tl.int64) * K * V + o_kv)
    elif START == 2:
        b_c = tl.load(c_start + (i_s * H + i_h).to(tl.int64) * K * V + o_kv)
    else:
        b_c = tl.zeros([K, V], dtype=tl.float32)

    b_mask_t = tl.trans(_intra_mask(s, BT))  # [BT, BT]: row j, column i, λ^(i-j) for i ≥ j
    b_qd = tl.exp(-s * (o_t + 1).to(tl.float32))  # [BT] λ^(i+1)
    p_q0 = q + bos * stride_qt + i_h * stride_qh
    p_k0 = k + bos * stride_kt + i_h * stride_kh
    p_v0 = v + bos * stride_vt + i_h * stride_vh
    p_do0 = do + bos * stride_dot + i_h * stride_doh
    p_dk0 = dk + bos * stride_dkt + i_h * stride_dkh
    p_dv0 = dv + bos * stride_dvt + i_h * stride_dvh
    n_chunks = tl.cdiv(n_rows, BT)
    for i_r in range(0, n_chunks):
        i_c = n_chunks - 1 - i_r
        p_q = tl.make_block_ptr(p_q0, (n_rows, K), (stride_qt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_k = tl.make_block_ptr(p_k0, (n_rows, K), (stride_kt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_v = tl.make_block_ptr(p_v0, (n_rows, V), (stride_vt, 1), (i_c * BT, 0), (BT, V), (1, 0))
        p_do = tl.make_block_ptr(p_do0, (n_rows, V), (stride_dot, 1), (i_c * BT, 0), (BT, V), (1, 0))
        p_dk = tl.make_block_ptr(p_dk0, (n_rows, K), (stride_dkt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_dv = tl.make_block_ptr(p_dv0, (n_rows, V), (stride_dvt, 1), (i_c * BT, 0), (BT, V), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0,), padding_option="zero")  # [BT, K]
        b_k = tl.load(p_k, boundary_check=(0,), padding_option="zero")  # [BT, K]
        b_v = tl.load(p_v, boundary_check=(0,), padding_option="zero")  # [BT, V]
        b_do = tl.load(p_do, boundary_check=(0,), padding_option="zero")  # [BT, V]
        m = tl.minimum(BT, n_rows - i_c * BT)
        b_kd = _key_decay(s, m, BT)[:, None]  # [BT, 1]

        b_a = tl.dot(b_k, tl.trans(b_q), input_precision=PREC) * b_mask_t  # [BT, BT]
        b_dv = tl.dot(b_a.to(b_do.dtype), b_do, input_precision=PREC)  # [BT, V]
        if STATE_BF16:
            b_dv += tl.dot((b_k * b_kd).to(tl.bfloat16), b_c.to(tl.bfloat16))
        else:
            b_dv += tl.dot(b_k.to(tl.float32) * b_kd, b_c, input_precision=PREC)
        tl.store(p_dv, b_dv.to(dv.dtype.element_ty), boundary_check=(0,))

        b_b = tl.dot(b_v, tl.trans(b_do), input_precision=PREC) * b_mask_t  # [BT, BT]
        b_dk = tl.dot(b_b.to(b_q.dtype), b_q, input_precision=PREC)  # [BT, K]
        if STATE_BF16:
            b_dk += tl.dot((b_v * b_kd).to(tl.bfloat16), tl.trans(b_c.to(tl.bfloat16)))
        else:
            b_dk += tl.dot(b_v.to(tl.float32) * b_kd, tl.trans(b_c), input_precision=PREC)
        tl.store(p_dk, b_dk.to(dk.dtype.element_ty), boundary_check=(0,))

        b_qs = (b_q * b_qd[:, None]).to(b_q.dtype)
        b_c = b_c * tl.exp(-s * m.to(tl.float32)) + tl.dot(tl.trans(b_qs), b_do, input_precision=PREC)
    if STORE_DH0:
        is_first = i_s == tl.load(seq_ptr + i_n)
        tl.store(dh0 + (i_n * H + i_h).to(tl.int64) * K * V + o_kv, b_c, mask=is_first)


def query_grads(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    h_start: torch.Tensor | None,
    per_segment: bool,
    plan: SegmentPlan,
    config: KernelConfig,
) -> tuple[torch.Tensor, torch.Tensor | None, object]:
    """dq, and (when a sequence spans several segments) each segment's reverse contribution R; plus the kernel."""
    _, _, H, K = q.shape
    V = v.shape[-1]
    n_k = config.split(config.bwd_key_split, K)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    r = torch.empty(plan.n_segments, H, K, V, dtype=torch.float32, device=q.device) if plan.multi else None
    start_mode = 0 if h_start is None else (2 if per_segment else 1)
    kernel = _dq_kernel[(plan.n_segments, H, n_k)](
        q, k, v, do, dq, slope, h_start if h_start is not None else dq, r if r is not None else dq,
        plan.seg_bos, plan.seg_len, plan.seg_seq,
        *rows_view(q), *rows_view(k), *rows_view(v), *rows_view(do), *rows_view(dq),
        H=H, K=K, V=V, BT=config.bwd_chunk, BK=K // n_k, START=start_mode, STORE_R=r is not None,
        STATE_BF16=q.dtype == torch.bfloat16, PREC=dot_precision(q.dtype),
        num_warps=config.warps(config.bwd_warps, 2 * K * V // n_k), num_stages=config.bwd_stages,
    )  # fmt: skip
    return dq, r, kernel


def key_value_grads(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    c_start: torch.Tensor | None,
    per_segment: bool,
    plan: SegmentPlan,
    config: KernelConfig,
    dh0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """dk, dv from the gradient arriving after each segment (per segment, per sequence = dht, or zero).

    Writes each sequence's initial-state gradient into `dh0` when given; also returns the compiled kernel.
    """
    _, _, H, K = q.shape
    V = v.shape[-1]
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    start_mode = 0 if c_start is None else (2 if per_segment else 1)
    kernel = _dkv_kernel[(plan.n_segments, H)](
        q, k, v, do, dk, dv, slope, c_start if c_start is not None else dk, dh0 if dh0 is not None else dk,
        plan.seg_bos, plan.seg_len, plan.seg_seq, plan.seq_ptr,
        *rows_view(q), *rows_view(k), *rows_view(v), *rows_view(do), *rows_view(dk), *rows_view(dv),
        H=H, K=K, V=V, BT=config.bwd_chunk, START=start_mode, STORE_DH0=dh0 is not None,
        STATE_BF16=q.dtype == torch.bfloat16, PREC=dot_precision(q.dtype),
        num_warps=config.warps(config.bwd_warps, K * V), num_stages=config.bwd_stages,
    )  # fmt: skip
    return dk, dv, kernel


def backward(
    do: torch.Tensor,
    dht: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None,
    starts: torch.Tensor | None,
    plan: SegmentPlan,
    config: KernelConfig,
    need_dh0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients (dq, dk, dv, d initial_state or None) from the output's and the final state's gradients."""
    _, _, H, K = q.shape
    V = v.shape[-1]
    dh0 = torch.empty(plan.n_seqs, H, K, V, dtype=torch.float32, device=q.device) if need_dh0 else None
    h_start = starts if starts is not None else initial_state
    per_segment = starts is not None
    dq, r, _ = fitting("bwd_dq", lambda c: query_grads(do, q, k, v, slope, h_start, per_segment, plan, c), config, q, V)
    c_start = scan_segments(r, dht, slope, plan, reverse=True)[0] if r is not None else dht

    def dkv(c: KernelConfig) -> tuple[torch.Tensor, torch.Tensor, object]:
        return key_value_grads(do, q, k, v, slope, c_start, r is not None, plan, c, dh0)

    dk, dv, _ = fitting("bwd_dkv", dkv, config, q, V)
    if dh0 is not None and plan.empty_seqs:
        empty = torch.tensor(plan.empty_seqs, device=q.device)
        dh0[empty] = dht[empty].float() if dht is not None else 0.0
    return dq, dk, dv, dh0
