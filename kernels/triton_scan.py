"""The sequential pass over segments that turns per-segment local states into per-segment start states.

Forward (segments in order): start[first] = h0; start[i+1] = λ^len_i · start[i] + local[i].
Backward (segments in reverse): the gradient flowing into a segment from everything after it follows the same rule
with time reversed, starting from the final state's gradient. Only D×D floats per segment move; local and start
states live in separate buffers so the loads of later segments can be issued ahead of the running sum.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .plan import SegmentPlan

_TILE = 2048  # state elements per program


@triton.jit
def _scan_kernel(
    local,
    start,
    h0,
    slope,
    seg_len,
    seq_ptr,
    H: tl.constexpr,
    KV: tl.constexpr,
    TILE: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_H0: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_h = tl.program_id(1)
    o_e = tl.program_id(2) * TILE + tl.arange(0, TILE)
    m_e = o_e < KV
    first = tl.load(seq_ptr + i_n)
    count = tl.load(seq_ptr + i_n + 1) - first
    s = tl.load(slope + i_h).to(tl.float32)
    if HAS_H0:
        b_cur = tl.load(h0 + (i_n * H + i_h).to(tl.int64) * KV + o_e, mask=m_e, other=0.0).to(tl.float32)
    else:
        b_cur = tl.zeros([TILE], dtype=tl.float32)
    for j in range(0, count):
        i_s = first + count - 1 - j if REVERSE else first + j
        o_s = (i_s * H + i_h).to(tl.int64) * KV + o_e
        b_local = tl.load(local + o_s, mask=m_e & (j < count - 1), other=0.0)  # the last one has no local state
        tl.store(start + o_s, b_cur, mask=m_e)
        n_rows = tl.load(seg_len + i_s)
        b_cur = b_cur * tl.exp(-s * n_rows.to(tl.float32)) + b_local


def scan_segments(
    local: torch.Tensor,
    h0: torch.Tensor | None,
    slope: torch.Tensor,
    plan: SegmentPlan,
    *,
    reverse: bool,
) -> tuple[torch.Tensor, object]:
    """Start states [S, H, K, V] from local states, sequence by sequence; also returns the compiled kernel."""
    _, H, K, V = local.shape
    start = torch.empty_like(local)
    tile = min(_TILE, K * V)
    kernel = _scan_kernel[(plan.n_seqs, H, triton.cdiv(K * V, tile))](
        local, start, h0 if h0 is not None else local, slope, plan.seg_len, plan.seq_ptr,
        H=H, KV=K * V, TILE=tile, REVERSE=reverse, HAS_H0=h0 is not None,
        num_warps=4, num_stages=3,
    )  # fmt: skip
    return start, kernel
