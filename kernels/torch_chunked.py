"""Chunked lightning attention in plain PyTorch: the block formulas, exact up to rounding, differentiable.

This is the CPU path and the fallback everywhere else. Within a block of m rows (i, j rows inside it):
  o_intra = ((Q Kᵀ) ⊙ M) V,  M_ij = λ^(i-j) for i ≥ j
  o_inter = (Q ⊙ λ^(i+1)) S_prev
  S      ← λ^m S_prev + (K ⊙ λ^(m-1-j))ᵀ V
Blocks are processed a group at a time: every block's intra product and local state in one batched matmul, then
a short loop carries the state from block to block, then every block's inter product in one matmul again. Groups
bound the memory (a local state per block is D×D floats).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_BLOCK = 64
GROUP_ROWS = 4096  # rows per group: bounds the per-block states held at once


def _decays(slope: torch.Tensor, block: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Intra mask [H, C, C], query decay [H, C, 1], key decay [H, C, 1] and block decay [H, 1, 1] for full blocks."""
    s = slope.float().view(-1, 1, 1)  # [H, 1, 1]
    idx = torch.arange(block, device=device, dtype=torch.float32)
    dist = idx[:, None] - idx[None, :]  # [C, C]
    mask = torch.exp(-s * dist.clamp(min=0)) * (dist >= 0)  # [H, C, C]
    q_decay = torch.exp(-s * (idx + 1).view(-1, 1))  # [H, C, 1]
    k_decay = torch.exp(-s * (block - 1 - idx).view(-1, 1))  # [H, C, 1]
    return mask, q_decay, k_decay, torch.exp(-s * block)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """[B, N*C, H, E] -> fp32 [B, H, N, C, E]."""
    B, rows, H, E = x.shape
    return x.float().reshape(B, rows // block, block, H, E).permute(0, 3, 1, 2, 4)


def _group(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor, decays: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One group of whole blocks. q, k: [B, H, N, C, D], v: [B, H, N, C, Dv] fp32; returns o and the next state."""
    mask, q_decay, k_decay, block_decay = decays
    intra = ((q @ k.transpose(-1, -2)) * mask[:, None]) @ v  # [B, H, N, C, Dv]
    local = (k * k_decay[:, None]).transpose(-1, -2) @ v  # [B, H, N, D, Dv]
    starts = []
    for n in range(q.shape[2]):
        starts.append(state)
        state = block_decay * state + local[:, :, n]  # [B, H, D, Dv]
    inter = (q * q_decay[:, None]) @ torch.stack(starts, dim=2)  # [B, H, N, C, Dv]
    return intra + inter, state


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
    state = (
        initial_state.float()
        if initial_state is not None
        else torch.zeros(B, H, D, Dv, dtype=torch.float32, device=q.device)
    )
    full = T // block_size * block_size
    decays = _decays(slope, block_size, q.device)
    step = max(block_size, GROUP_ROWS // block_size * block_size)
    outs = []
    for start in range(0, full, step):
        end = min(start + step, full)
        qb, kb, vb = (_blocks(x[:, start:end], block_size) for x in (q, k, v))
        o, state = _group(qb, kb, vb, state, decays)
        outs.append(o.permute(0, 2, 3, 1, 4).reshape(B, end - start, H, Dv))  # [B, rows, H, Dv]
    if full < T:  # a last, partial block of m rows
        tail = [F.pad(x[:, full:].float(), (0, 0, 0, 0, 0, block_size - (T - full))) for x in (q, k, v)]
        m = T - full
        mask, q_decay, _, _ = decays
        qb, kb, vb = (x.transpose(1, 2) for x in tail)  # [B, H, C, E]
        o = ((qb @ kb.transpose(-1, -2)) * mask) @ vb + (qb * q_decay) @ state  # [B, H, C, Dv]
        s = slope.float().view(-1, 1, 1)  # [H, 1, 1]
        idx = torch.arange(block_size, device=q.device, dtype=torch.float32)
        k_decay = torch.exp(-s * (m - 1 - idx).clamp(min=0).view(-1, 1)) * (idx < m).view(-1, 1)  # [H, C, 1]
        state = torch.exp(-s * m) * state + (kb * k_decay).transpose(-1, -2) @ vb  # [B, H, D, Dv]
        outs.append(o.transpose(1, 2)[:, :m])  # [B, m, H, Dv]
    if not outs:
        return q.new_empty(B, 0, H, Dv), state
    return torch.cat(outs, dim=1).to(q.dtype), state


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
