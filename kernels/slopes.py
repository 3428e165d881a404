"""MiniMax's decay rates per head and layer: the `slope` every lightning-attention entry point takes."""

from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi head slopes 2^(-8(h+1)/H); a non-power-of-two H takes the nearest power below and fills up with the
    odd-indexed slopes of twice that many heads (the ALiBi interleave rule)."""
    if num_heads & (num_heads - 1) == 0:
        return [2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)]
    base = 2 ** math.floor(math.log2(num_heads))
    return alibi_slopes(base) + alibi_slopes(2 * base)[0::2][: num_heads - base]


def minimax_slopes(
    num_heads: int, layer: int = 0, num_layers: int = 80, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """fp32 decay rates [H] of layer `layer` as MiniMax-Text-01 computes them: ALiBi slopes scaled by
    1 − l/(L−1) + 1e-5, so early layers forget fastest (the product is taken in fp64, then rounded once)."""
    factor = 1.0 - layer / max(num_layers - 1, 1) + 1e-5
    slopes = torch.tensor([s * factor for s in alibi_slopes(num_heads)], dtype=torch.float64, device="cpu")
    return slopes.to(device=device, dtype=torch.float32)
