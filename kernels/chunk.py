"""Chunked lightning attention in plain PyTorch: the block formulas, exact up to rounding, differentiable.

This is the CPU path and the fallback everywhere else. Within a block of m rows:
  o_intra = ((Q Kᵀ) ⊙ M) V,  M_ij = λ^(i-j) for i ≥ j
  o_inter = (Q ⊙ λ^(i+1)) S_prev
  S      ← λ^m S_prev + (K ⊙ λ^(m-1-j))ᵀ V
"""

from __future__ import annotations

import torch

DEFAULT_BLOCK = 64


def chunk_lightning(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    block_size: int = DEFAULT_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v: [B, T, H, D]; returns o [B, T, H, D] in the input dtype and the fp32 final state [B, H, D, D]."""
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    s = slope.float().view(1, H, 1, 1)  # [1, H, 1, 1]
    state = (
        initial_state.float()
        if initial_state is not None
        else torch.zeros(B, H, D, Dv, dtype=torch.float32, device=q.device)
    )
    outs = []
    for start in range(0, T, block_size):
        qb = q[:, start : start + block_size].float().transpose(1, 2)  # [B, H, m, D]
        kb = k[:, start : start + block_size].float().transpose(1, 2)  # [B, H, m, D]
        vb = v[:, start : start + block_size].float().transpose(1, 2)  # [B, H, m, Dv]
        m = qb.shape[2]
        idx = torch.arange(m, device=q.device, dtype=torch.float32)
        dist = idx[:, None] - idx[None, :]  # [m, m]
        mask = torch.exp(-s * dist.clamp(min=0)) * (dist >= 0)  # [1, H, m, m]
        q_decay = torch.exp(-s * (idx + 1).view(1, 1, m, 1))  # [1, H, m, 1]
        k_decay = torch.exp(-s * (m - 1 - idx).view(1, 1, m, 1))  # [1, H, m, 1]
        o = (qb @ kb.transpose(-1, -2) * mask) @ vb + (qb * q_decay) @ state  # [B, H, m, Dv]
        state = torch.exp(-s * m) * state + (kb * k_decay).transpose(-1, -2) @ vb  # [B, H, D, Dv]
        outs.append(o)
    if not outs:
        return q.new_empty(B, 0, H, Dv), state
    return torch.cat(outs, dim=2).transpose(1, 2).to(q.dtype), state  # [B, T, H, Dv]


def decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    state: torch.Tensor,
    state_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per sequence: q, k, v [B, H, D]; updates fp32 `state` ([N, H, D, D]) in place; returns o [B, H, D]."""
    rows = state_index if state_index is not None else torch.arange(q.shape[0], device=state.device)
    decay = torch.exp(-slope.float()).view(1, -1, 1, 1)  # [1, H, 1, 1]
    new = decay * state[rows] + k.float()[..., :, None] * v.float()[..., None, :]  # [B, H, D, Dv]
    state[rows] = new
    return torch.einsum("bhd,bhde->bhe", q.float(), new).to(q.dtype)
