"""The public entry points: validate inputs once, then run the chosen implementation."""

from __future__ import annotations

import torch

from .chunk import chunk_lightning, decode_step
from .naive import naive_recurrence

IMPLS = ("auto", "torch", "naive")


def _check_common(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, rank: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != rank:
            raise ValueError(f"{name} must have {rank} dims, got shape {tuple(t.shape)}")
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"q, k, v shapes do not match: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    heads = q.shape[-2]
    if slope.dim() != 1 or slope.shape[0] != heads:
        raise ValueError(f"slope must have shape [{heads}] (one decay rate per head), got {tuple(slope.shape)}")


def auto_impl(device: torch.device) -> str:
    """The path `impl="auto"` takes on `device`."""
    return "torch"


def _resolve(impl: str, device: torch.device) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLS)}")
    return auto_impl(device) if impl == "auto" else impl


def lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention over [B, T, H, D] inputs with per-head decay exp(-slope).

    `cu_seqlens` ([N+1] int offsets, B = 1) packs N sequences whose states restart at each boundary;
    `initial_state` and the returned final state are fp32 [N, H, D, Dv] (N = B without packing).
    """
    _check_common(q, k, v, slope, rank=4)
    B, T, H, D = q.shape
    n_seq = B
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"cu_seqlens needs batch size 1 (sequences packed along T), got B={B}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != T:
            raise ValueError(f"cu_seqlens must run from 0 to T={T}, got {cu_seqlens.tolist()}")
        if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
            raise ValueError("cu_seqlens must be non-decreasing")
        n_seq = cu_seqlens.numel() - 1
    if initial_state is not None and tuple(initial_state.shape) != (n_seq, H, D, v.shape[-1]):
        expected = (n_seq, H, D, v.shape[-1])
        raise ValueError(f"initial_state must have shape {expected}, got {tuple(initial_state.shape)}")
    which = _resolve(impl, q.device)
    run = naive_recurrence if which == "naive" else chunk_lightning

    if cu_seqlens is None:
        o, state = run(q, k, v, slope, initial_state)
        return o, (state if output_final_state else None)
    bounds = cu_seqlens.tolist()
    outs, states = [], []
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        init = initial_state[i : i + 1] if initial_state is not None else None
        o, state = run(q[:, start:end], k[:, start:end], v[:, start:end], slope, init)
        outs.append(o)
        states.append(state)
    return torch.cat(outs, dim=1), (torch.cat(states) if output_final_state else None)


def lightning_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    state: torch.Tensor,
    *,
    state_index: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """One token per sequence: q, k, v [B, H, D]; fp32 `state` [N, H, D, Dv] updated in place (rows `state_index`)."""
    _check_common(q, k, v, slope, rank=3)
    B, H, D = q.shape
    if state.dtype != torch.float32 or state.dim() != 4 or tuple(state.shape[1:]) != (H, D, v.shape[-1]):
        raise ValueError(f"state must be fp32 [N, {H}, {D}, {v.shape[-1]}], got {state.dtype} {tuple(state.shape)}")
    if state_index is None and state.shape[0] != B:
        raise ValueError(f"state has {state.shape[0]} rows for a batch of {B}; pass state_index to pick rows")
    if state_index is not None and tuple(state_index.shape) != (B,):
        raise ValueError(f"state_index must have shape [{B}], got {tuple(state_index.shape)}")
    _resolve(impl, q.device)
    return decode_step(q, k, v, slope, state, state_index)
