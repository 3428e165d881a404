"""The Triton path as autograd-aware functions: forward and backward kernels behind one torch.autograd.Function.

Inputs must already be validated (see `dispatch`); this module only arranges memory layouts and the launch plan.
"""

from __future__ import annotations

import torch

from . import triton_bwd, triton_decode, triton_fwd
from .interpret import interpreted
from .plan import DEFAULT_CONFIG, KernelConfig, SegmentPlan, plan_for

__all__ = ["interpreted", "lightning_attn_triton", "lightning_decode_triton"]


def _flat_rows(x: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D] with unit last stride and batch/time axes that flatten into one row axis (copy if not)."""
    B, T = x.shape[:2]
    if x.stride(-1) != 1 or (B > 1 and x.stride(0) != T * x.stride(1)):
        return x.contiguous()
    return x


class _LightningAttn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        slope: torch.Tensor,
        initial_state: torch.Tensor | None,
        plan: SegmentPlan,
        config: KernelConfig,
        output_final_state: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, final, starts = triton_fwd.forward(q, k, v, slope, initial_state, plan, config, output_final_state)
        ctx.save_for_backward(q, k, v, slope, initial_state, starts)
        ctx.plan = plan
        ctx.config = config
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, do: torch.Tensor | None, dht: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, slope, initial_state, starts = ctx.saved_tensors
        do = _flat_rows(do) if do is not None else torch.zeros_like(v)
        dht = dht.float().contiguous() if dht is not None else None
        dq, dk, dv, dh0 = triton_bwd.backward(
            do, dht, q, k, v, slope, initial_state, starts, ctx.plan, ctx.config, need_dh0=ctx.needs_input_grad[4]
        )
        return dq, dk, dv, None, dh0, None, None, None


def lightning_attn_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    seq_lengths: list[int] | None = None,
    config: KernelConfig = DEFAULT_CONFIG,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validated [B, T ≥ 1, H, D] inputs → (o, final state or None); differentiable in q, k, v, initial_state.

    `seq_lengths` (B = 1) are the lengths of the packed sequences, i.e. the differences of cu_seqlens. Without
    gradients to compute, the kernels run directly under a plan sized for the forward alone.
    """
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, initial_state))
    plan = plan_for(tuple(q.shape), q.dtype, seq_lengths, q.device, config, training=training)
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    q, k, v, slope = _flat_rows(q), _flat_rows(k), _flat_rows(v), slope.float().contiguous()
    if not training:
        o, final, _ = triton_fwd.forward(q, k, v, slope, h0, plan, config, output_final_state)
        return o, final
    return _LightningAttn.apply(q, k, v, slope, h0, plan, config, output_final_state)


def lightning_decode_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    state: torch.Tensor,
    state_index: torch.Tensor | None = None,
    config: KernelConfig = DEFAULT_CONFIG,
) -> torch.Tensor:
    """Validated [B, H, D] inputs and a contiguous fp32 state pool, updated in place → o [B, H, D]."""
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    index = state_index.contiguous() if state_index is not None else None
    return triton_decode.decode(q, k, v, slope.float().contiguous(), state, index, config.decode_block_v)
