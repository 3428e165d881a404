"""Ground truth for lightning attention: the exact token recurrence, and a materialised-mask form for small T.

MiniMax semantics: no scaling, the current token counts.
  S_t = λ S_{t-1} + k_tᵀ v_t ;  o_t = q_t S_t ;  λ = exp(-slope)
"""

from __future__ import annotations

import torch


def naive_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token at a time in fp32. q, k, v: [B, T, H, D]; returns o [B, T, H, D] (input dtype), state [B, H, D, D]."""
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    decay = torch.exp(-slope.float()).view(1, H, 1, 1)  # [1, H, 1, 1]
    state = (
        initial_state.float().clone()
        if initial_state is not None
        else torch.zeros(B, H, D, Dv, dtype=torch.float32, device=q.device)
    )
    qf, kf, vf = q.float(), k.float(), v.float()
    out = torch.empty(B, T, H, Dv, dtype=torch.float32, device=q.device)
    for t in range(T):
        state = decay * state + kf[:, t, :, :, None] * vf[:, t, :, None, :]  # [B, H, D, Dv]
        out[:, t] = torch.einsum("bhd,bhde->bhe", qf[:, t], state)
    return out.to(q.dtype), state


def naive_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """o = ((Q Kᵀ) ⊙ M) V with M_ij = λ^(i-j) for i ≥ j, materialised over the whole sequence (small T only)."""
    T = q.shape[1]
    pos = torch.arange(T, device=q.device, dtype=torch.float32)
    dist = pos[:, None] - pos[None, :]  # [T, T]
    mask = torch.exp(-slope.float().view(-1, 1, 1) * dist.clamp(min=0)) * (dist >= 0)  # [H, T, T]
    scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * mask  # [B, H, T, T]
    return torch.einsum("bhij,bjhe->bihe", scores, v.float()).to(q.dtype)


def naive_recurrence_grads(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None,
    grad_o: torch.Tensor,
    grad_final: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the recurrence token by token in fp32, without autograd's tape (fast enough for T in the 1000s).

    Forward in time: dq_t = do_t S_tᵀ. Backward in time: dS_t = q_tᵀ do_t + λ dS_{t+1} (plus the final state's
    gradient at the last step), dk_t = v_t dS_tᵀ, dv_t = k_t dS_t; the initial state's gradient is λ dS_0.
    Returns (dq, dk, dv, d initial_state) in fp32.
    """
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    decay = torch.exp(-slope.float()).view(1, H, 1, 1)  # [1, H, 1, 1]
    qf, kf, vf, gf = q.float(), k.float(), v.float(), grad_o.float()
    state = initial_state.float().clone() if initial_state is not None else qf.new_zeros(B, H, D, Dv)
    dq = torch.zeros_like(qf)
    for t in range(T):
        state = decay * state + kf[:, t, :, :, None] * vf[:, t, :, None, :]  # [B, H, D, Dv]
        dq[:, t] = torch.einsum("bhe,bhde->bhd", gf[:, t], state)
    carry = grad_final.float().clone() if grad_final is not None else qf.new_zeros(B, H, D, Dv)
    dk, dv = torch.zeros_like(kf), torch.zeros_like(vf)
    for t in reversed(range(T)):
        carry = carry + qf[:, t, :, :, None] * gf[:, t, :, None, :]  # dS_t [B, H, D, Dv]
        dk[:, t] = torch.einsum("bhde,bhe->bhd", carry, vf[:, t])
        dv[:, t] = torch.einsum("bhd,bhde->bhe", kf[:, t], carry)
        carry = decay * carry
    return dq, dk, dv, carry
