"""Helpers shared by the kernel tests and `mmx bench kernels`: MiniMax-like inputs and the error measure."""

from __future__ import annotations

import torch

from mmx.kernels.slopes import minimax_slopes

__all__ = ["minimax_slopes", "random_qkv", "rel_rms"]


def random_qkv(
    batch: int,
    seqlen: int,
    heads: int,
    dim: int,
    dim_v: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    scale: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q, k, v [B, T, H, D] (v: [B, T, H, Dv]) drawn on `device`; `scale` keeps sums of k vᵀ in range."""
    shapes = ((batch, seqlen, heads, dim), (batch, seqlen, heads, dim), (batch, seqlen, heads, dim_v or dim))
    return tuple(torch.randn(s, dtype=dtype, device=device).mul_(scale) for s in shapes)  # type: ignore[return-value]


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖₂ / ‖expected‖₂ in fp64; NaN anywhere gives NaN (which fails every tolerance)."""
    a, e = actual.double(), expected.double()
    return float((a - e).norm() / e.norm().clamp_min(1e-30))
