"""Triton prefill forward: local segment states, the segment scan, then outputs with the state held on chip.

Per segment and head, a program walks the segment's blocks of BT rows in order. For a block of m rows
(i, j the rows inside it, λ = exp(-slope)):
  o = ((Q Kᵀ) ⊙ M) V + (Q ⊙ λ^(i+1)) S        M_ij = λ^(i-j) for i ≥ j, else 0
  S ← λ^m S + (K ⊙ λ^(m-1-j))ᵀ V
so q, k, v are read once and o written once. The start state S of each segment comes from `_local_state_kernel`
(each segment's own contribution, in parallel) and `triton_scan.scan_segments` (a short sequential pass over the
segments of each sequence). Everything about decays and states is fp32; products take the input dtype, except that
the state is multiplied in fp32 unless inputs are bf16 (fp16 cannot hold a long sum of k vᵀ).

The outputs kernel walks a block in one of two forms. "masked" multiplies the scores by M, a [BT, BT] table that
stays in registers beside the fp32 state and the accumulator; at BT = 128 that overflows the 255 registers a thread
may hold (74 spilled on an H200). "factored" splits λ^(i-j) = λ^(i-c) λ^(c-j) between the rows of the output and
the keys, which leaves only a causal mask (see `_outputs_factored`); it needs the factors in range, so heads whose
decay is too steep, and fp16 inputs, take the masked form.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from .plan import KernelConfig, SegmentPlan
from .triton_scan import scan_segments

R = TypeVar("R")
# Largest exponent s·(BT/2 + 1) the factored walk may use: its operands are scaled by up to e^40 ≈ 2e17 either way,
# far inside the bf16/fp32 range for any sane q, k, v, and a state must fall below ~1e-21 before its scaled copy
# underflows. Heads with steeper decays (s > 0.61 at 128-row blocks) take the exact masked walk.
FACTOR_LIMIT = 40.0
_FITTED: dict[tuple, KernelConfig] = {}  # (phase, head dims, dtype, device, asked config) -> config that fits
_STEEP: dict[tuple[int, int, int], tuple[weakref.ref, bool]] = {}  # (slope pointer, version, rows) -> any steep head
Launch = tuple[dict[str, object], dict[str, int]]  # a kernel's constexpr arguments and its launch options


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
    N_V: tl.constexpr,
    PREC: tl.constexpr,
):
    """states[seg] = Σ_j λ^(len-1-j) k_jᵀ v_j over the segment's rows (its state started from zero)."""
    # the value parts of one segment are neighbours in launch order, so the second reads k from L2
    i_s = tl.load(local_segs + tl.program_id(0) // N_V)
    i_v = tl.program_id(0) % N_V
    i_h = tl.program_id(1)
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
def _load_start(h_start, i_s, i_n, i_h, o_kv, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, START: tl.constexpr):
    """The program's block of its segment's start state (fp32), laid out as `o_kv`; zero when START is 0."""
    if START == 1:
        return tl.load(h_start + (i_n * H + i_h).to(tl.int64) * K * V + o_kv)
    elif START == 2:
        return tl.load(h_start + (i_s * H + i_h).to(tl.int64) * K * V + o_kv)
    else:
        return tl.zeros(o_kv.shape, dtype=tl.float32)


@triton.jit
def _store_final(h_final, b_h, seq_ptr, i_s, i_n, i_h, o_kv, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr):
    """Store the state block as its sequence's final state if this segment is the sequence's last."""
    is_last = i_s == tl.load(seq_ptr + i_n + 1) - 1
    tl.store(h_final + (i_n * H + i_h).to(tl.int64) * K * V + o_kv, b_h, mask=is_last)


@triton.jit
def _outputs_masked(p_q0, p_k0, p_v0, p_o0, b_h, s, n_rows, i_v, stride_qt, stride_kt, stride_vt, stride_ot,
                    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, STATE_BF16: tl.constexpr,
                    PREC: tl.constexpr):  # fmt: skip
    """Walk a segment's blocks with the state b_h [K, BV]; the decays inside a block are a [BT, BT] mask.

    Exact for any slope. Returns the state after the segment.
    """
    b_mask = _intra_mask(s, BT)
    b_qd = tl.exp(-s * (tl.arange(0, BT) + 1).to(tl.float32))  # [BT] λ^(i+1)
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
        tl.store(p_o, b_o.to(p_o0.dtype.element_ty), boundary_check=(0,))
    return b_h


@triton.jit
def _outputs_factored(p_q0, p_k0, p_v0, p_o0, b_ht, s, n_rows, i_v, stride_qt, stride_kt, stride_vt, stride_ot,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                      PREC: tl.constexpr):  # fmt: skip
    """Walk a segment's blocks with the transposed state b_ht [BV, K]; the decays are folded into the operands.

    With c = BT/2, k̃_j = λ^(c-j) k_j and the state carried as G = λ^(c+1) S, a block of m rows gives
      o_i = λ^(i-c) · ( Σ_{j≤i} (q_i·k̃_j) v_j + q_i G )        G ← λ^m (G + K̃ᵀ V)
    so the scores need only the causal mask, not a [BT, BT] table of decays held in registers next to the state and
    the accumulator, and q, k̃, v and G all enter the products from shared memory. The factors span e^(±s(c+1));
    the caller keeps that within FACTOR_LIMIT. Returns the transposed state after the segment.
    """
    C: tl.constexpr = BT // 2
    o_t = tl.arange(0, BT)
    b_rowd = tl.exp(-s * (o_t - C).to(tl.float32))  # [BT] λ^(i-c)
    b_keyd = tl.exp(-s * (C - o_t).to(tl.float32))  # [BT] λ^(c-j)
    causal = o_t[:, None] >= o_t[None, :]  # [BT, BT]
    b_gt = b_ht * tl.exp(-s * (C + 1))  # [BV, K] G
    for i_c in range(0, tl.cdiv(n_rows, BT)):
        p_q = tl.make_block_ptr(p_q0, (n_rows, K), (stride_qt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_k = tl.make_block_ptr(p_k0, (n_rows, K), (stride_kt, 1), (i_c * BT, 0), (BT, K), (1, 0))
        p_v = tl.make_block_ptr(p_v0, (n_rows, V), (stride_vt, 1), (i_c * BT, i_v * BV), (BT, BV), (1, 0))
        p_o = tl.make_block_ptr(p_o0, (n_rows, V), (stride_ot, 1), (i_c * BT, i_v * BV), (BT, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0,), padding_option="zero")  # [BT, K]
        b_k = tl.load(p_k, boundary_check=(0,), padding_option="zero")  # [BT, K]; rows past m are zero
        b_v = tl.load(p_v, boundary_check=(0,), padding_option="zero")  # [BT, BV]
        m = tl.minimum(BT, n_rows - i_c * BT)
        b_ks = (b_k * b_keyd[:, None]).to(b_k.dtype)  # [BT, K] k̃
        b_a = tl.where(causal, tl.dot(b_q, tl.trans(b_ks), input_precision=PREC), 0.0)  # [BT, BT]
        b_o = tl.dot(b_q, tl.trans(b_gt.to(b_q.dtype)), input_precision=PREC)  # [BT, BV]
        b_o = tl.dot(b_a.to(b_v.dtype), b_v, acc=b_o, input_precision=PREC) * b_rowd[:, None]
        tl.store(p_o, b_o.to(p_o0.dtype.element_ty), boundary_check=(0,))
        b_gt = tl.dot(tl.trans(b_v), b_ks, acc=b_gt, input_precision=PREC) * tl.exp(-s * m.to(tl.float32))
    return b_gt * tl.exp(s * (C + 1))


@triton.jit
def _masked_program(p_q0, p_k0, p_v0, p_o0, h_start, h_final, seq_ptr, s, n_rows, i_s, i_n, i_h, i_v, o_k, o_v,
                    stride_qt, stride_kt, stride_vt, stride_ot, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                    BT: tl.constexpr, BV: tl.constexpr, START: tl.constexpr, STORE_FINAL: tl.constexpr,
                    STATE_BF16: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """One segment through the masked walk: start state in, outputs, final state out."""
    o_kv = o_k[:, None] * V + o_v[None, :]  # [K, BV] offsets inside one [K, V] state
    b_h = _load_start(h_start, i_s, i_n, i_h, o_kv, H, K, V, START)
    b_h = _outputs_masked(p_q0, p_k0, p_v0, p_o0, b_h, s, n_rows, i_v, stride_qt, stride_kt, stride_vt, stride_ot,
                          K, V, BT, BV, STATE_BF16, PREC)  # fmt: skip
    if STORE_FINAL:
        _store_final(h_final, b_h, seq_ptr, i_s, i_n, i_h, o_kv, H, K, V)


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
    N_V: tl.constexpr,
    START: tl.constexpr,  # 0: zero state, 1: h_start[sequence], 2: h_start[segment]
    STORE_FINAL: tl.constexpr,
    STATE_BF16: tl.constexpr,
    WALK: tl.constexpr,  # 0: every head masked; 1: heads within FACTOR_LIMIT, factored; 2: the others, masked
    FACTOR_LIMIT: tl.constexpr,
    PREC: tl.constexpr,
):
    """Outputs of one segment (value columns i_v*BV ...) and, for a sequence's last segment, its final state."""
    # the value parts of one segment are neighbours in launch order, so the second reads q and k from L2
    i_s = tl.program_id(0) // N_V
    i_v = tl.program_id(0) % N_V
    i_h = tl.program_id(1)
    bos = tl.load(seg_bos + i_s).to(tl.int64)
    n_rows = tl.load(seg_len + i_s)
    i_n = tl.load(seg_seq + i_s)
    s = tl.load(slope + i_h).to(tl.float32)
    o_k = tl.arange(0, K)
    o_v = i_v * BV + tl.arange(0, BV)
    p_q0 = q + bos * stride_qt + i_h * stride_qh
    p_k0 = k + bos * stride_kt + i_h * stride_kh
    p_v0 = v + bos * stride_vt + i_h * stride_vh
    p_o0 = o + bos * stride_ot + i_h * stride_oh
    steep = tl.abs(s) * (BT // 2 + 1) > FACTOR_LIMIT  # too steep (either way) for the factored walk's range
    if WALK == 1:
        if not steep:
            o_vk = o_v[:, None] + o_k[None, :] * V  # [BV, K] offsets of the transposed block of a [K, V] state
            b_ht = _load_start(h_start, i_s, i_n, i_h, o_vk, H, K, V, START)
            b_ht = _outputs_factored(p_q0, p_k0, p_v0, p_o0, b_ht, s, n_rows, i_v, stride_qt, stride_kt, stride_vt,
                                     stride_ot, K, V, BT, BV, PREC)  # fmt: skip
            if STORE_FINAL:
                _store_final(h_final, b_ht, seq_ptr, i_s, i_n, i_h, o_vk, H, K, V)
    elif steep | (WALK == 0):
        _masked_program(p_q0, p_k0, p_v0, p_o0, h_start, h_final, seq_ptr, s, n_rows, i_s, i_n, i_h, i_v, o_k, o_v,
                        stride_qt, stride_kt, stride_vt, stride_ot, H, K, V, BT, BV, START, STORE_FINAL, STATE_BF16,
                        PREC)  # fmt: skip


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
            smaller = current.shrink(x.shape[-1], x.dtype, phase)
            if smaller is None:
                raise
            current = smaller
            continue
        _FITTED[key] = current
        return result


@functools.lru_cache(maxsize=256)
def local_launch(config: KernelConfig, dtype: torch.dtype, heads: int, dim_k: int, dim_v: int) -> Launch:
    """Constexprs, warps and stages of the local-state kernel for inputs of `dtype` (also read by `kernels.ptxas`)."""
    n_v = config.split(config.value_split, dim_v)
    warps = config.local_warps if config.local_warps is not None else config.fwd_warps
    meta = dict(H=heads, K=dim_k, V=dim_v, BT=config.local_rows(dim_k, dtype), BV=dim_v // n_v, N_V=n_v,
                PREC=dot_precision(dtype))  # fmt: skip
    stages = config.local_pipeline(dim_k, dtype)
    return meta, {"num_warps": config.warps(warps, dim_k * dim_v // n_v), "num_stages": stages}


def output_walks(config: KernelConfig, dtype: torch.dtype, steep: bool = True) -> tuple[int, ...]:
    """The WALKs of the outputs kernel to launch: the factored form (not for fp16, whose range is too small) runs as
    two launches over the same grid, one for the heads within FACTOR_LIMIT and one that runs the rest masked, so
    neither pays for the other's registers; the second only when some head is `steep`."""
    if config.fwd_form == "factored" and dtype != torch.float16:
        return (1, 2) if steep else (1,)
    return (0,)


def has_steep_heads(slope: torch.Tensor, rows: int) -> bool:
    """Whether any head's decay is too steep for the factored walk at blocks of `rows`. Read from the device once per
    slope tensor (a model's slopes live as long as the model); while a CUDA graph is being captured, where no read
    may happen, every head counts as possibly steep."""
    key = (slope.data_ptr(), slope._version, rows)
    known = _STEEP.get(key)
    if known is not None and known[0]() is slope:
        return known[1]
    if slope.is_cuda and torch.cuda.is_current_stream_capturing():
        return True
    steep = bool((slope.abs() * (rows // 2 + 1) > FACTOR_LIMIT).any())
    if len(_STEEP) > 1024:  # slopes made per call (tests, benchmarks) must not pile up
        _STEEP.clear()
    _STEEP[key] = (weakref.ref(slope), steep)
    return steep


@functools.lru_cache(maxsize=256)
def output_launch(config: KernelConfig, dtype: torch.dtype, heads: int, dim_k: int, dim_v: int, walk: int, start: int,
                  store_final: bool) -> Launch:  # fmt: skip
    """Constexprs, warps and stages of the outputs kernel (also read by `kernels.ptxas`); cached, since a model asks
    for the same few launches every layer."""
    n_v = config.split(config.value_split, dim_v)
    meta = dict(H=heads, K=dim_k, V=dim_v, BT=config.fwd_chunk(dim_k, dtype), BV=dim_v // n_v, N_V=n_v, START=start,
                STORE_FINAL=store_final, STATE_BF16=dtype == torch.bfloat16, WALK=walk, FACTOR_LIMIT=FACTOR_LIMIT,
                PREC=dot_precision(dtype))  # fmt: skip
    return meta, {"num_warps": config.warps(config.fwd_warps, dim_k * dim_v // n_v), "num_stages": config.fwd_stages}


def local_states(
    k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, plan: SegmentPlan, config: KernelConfig
) -> tuple[torch.Tensor, object]:
    """Each non-final segment's own state contribution, fp32 [S, H, K, V]; also returns the compiled kernel."""
    _, _, H, K = k.shape
    V = v.shape[-1]
    meta, options = local_launch(config, k.dtype, H, K, V)
    local = torch.empty(plan.n_segments, H, K, V, dtype=torch.float32, device=k.device)
    kernel = _local_state_kernel[(plan.local_segs.numel() * meta["N_V"], H)](
        k, v, slope, local, plan.local_segs, plan.seg_bos, plan.seg_len, *rows_view(k), *rows_view(v),
        **meta, **options,
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

    Writes each sequence's final state into `final` when given; also returns the compiled kernel (the factored
    walk's, when it runs).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    start = 0 if h_start is None else (2 if per_segment else 1)
    steep = has_steep_heads(slope, config.fwd_chunk(K, q.dtype))
    kernels = []
    for walk in output_walks(config, q.dtype, steep):
        meta, options = output_launch(config, q.dtype, H, K, V, walk, start, final is not None)
        kernels.append(_output_kernel[(plan.n_segments * meta["N_V"], H)](
            q, k, v, o, slope, h_start if h_start is not None else o, final if final is not None else o,
            plan.seg_bos, plan.seg_len, plan.seg_seq, plan.seq_ptr,
            *rows_view(q), *rows_view(k), *rows_view(v), *rows_view(o), **meta, **options,
        ))  # fmt: skip
    return o, kernels[0]


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
