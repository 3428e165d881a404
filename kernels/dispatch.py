"""The public entry points: validate inputs once, then run the chosen implementation.

`impl="auto"` runs Triton on CUDA tensors whose head dims the kernels support (16, 32, 64, 128) and the chunked
PyTorch path everywhere else. `"triton"` on a CPU tensor works only under Triton's interpreter (TRITON_INTERPRET=1
set before triton is first imported), which is how CI tests the kernels.
"""

from __future__ import annotations

import importlib.util
import itertools

import torch

from .naive import naive_recurrence
from .plan import HEAD_DIMS
from .torch_chunked import chunk_lightning, decode_step

IMPLS = ("auto", "triton", "torch", "naive")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _check_common(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, rank: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != rank:
            raise ValueError(f"{name} must have {rank} dims, got shape {tuple(t.shape)}")
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"q, k, v shapes do not match: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype not in _FLOATS or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one of fp16/bf16/fp32, got {q.dtype}, {k.dtype}, {v.dtype}")
    if len({q.device, k.device, v.device, slope.device}) != 1:
        devices = ", ".join(str(t.device) for t in (q, k, v, slope))
        raise ValueError(f"q, k, v and slope must be on one device, got {devices}")
    heads = q.shape[-2]
    if slope.dim() != 1 or slope.shape[0] != heads:
        raise ValueError(f"slope must have shape [{heads}] (one decay rate per head), got {tuple(slope.shape)}")


def triton_available() -> bool:
    """Whether the triton package is installed (the CUDA path needs it; the torch path does not)."""
    return importlib.util.find_spec("triton") is not None


def auto_impl(device: torch.device) -> str:
    """The path `impl="auto"` takes on `device` (for supported head dims)."""
    return "triton" if device.type == "cuda" and triton_available() else "torch"


def _resolve(impl: str, device: torch.device, dims: tuple[int, int]) -> str:
    """The implementation to run; raises ValueError when the requested one cannot run these inputs."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLS)}")
    if impl == "auto":
        which = auto_impl(device)
        return "torch" if which == "triton" and not set(dims) <= set(HEAD_DIMS) else which
    if impl == "triton":
        if not triton_available():
            raise ValueError("impl='triton' needs the triton package (pip install 'mmx[triton]')")
        if not set(dims) <= set(HEAD_DIMS):
            raise ValueError(f"the Triton kernels support head dims {HEAD_DIMS}, got q/k {dims[0]} and v {dims[1]}")
        from .triton_attn import interpreted

        if device.type != "cuda" and not interpreted():
            raise ValueError(
                f"impl='triton' needs CUDA tensors, got {device}; on the CPU set TRITON_INTERPRET=1 before "
                "triton is imported"
            )
    return impl


def _seq_lengths(cu_seqlens: torch.Tensor, batch: int, seqlen: int) -> list[int]:
    """Lengths of the packed sequences; raises ValueError unless cu_seqlens runs 0 … T, non-decreasing, with B = 1."""
    if batch != 1:
        raise ValueError(f"cu_seqlens needs batch size 1 (sequences packed along T), got B={batch}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype.is_floating_point:
        raise ValueError(f"cu_seqlens must be a 1-d integer tensor of N+1 offsets, got {cu_seqlens.dtype} "
                         f"{tuple(cu_seqlens.shape)}")  # fmt: skip
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != seqlen:
        raise ValueError(f"cu_seqlens must run from 0 to T={seqlen}, got {bounds[0]} … {bounds[-1]}")
    if any(b < a for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
        raise ValueError("cu_seqlens must be non-decreasing")
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


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
    Differentiable in q, k, v and initial_state on every path.
    """
    _check_common(q, k, v, slope, rank=4)
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    lengths = None if cu_seqlens is None else _seq_lengths(cu_seqlens, B, T)
    n_seq = B if lengths is None else len(lengths)
    if initial_state is not None and tuple(initial_state.shape) != (n_seq, H, D, Dv):
        raise ValueError(f"initial_state must have shape {(n_seq, H, D, Dv)}, got {tuple(initial_state.shape)}")
    which = _resolve(impl, q.device, (D, Dv))
    if T == 0:
        state = initial_state.float() if initial_state is not None else q.new_zeros(n_seq, H, D, Dv).float()
        return q.new_empty(B, 0, H, Dv), (state if output_final_state else None)
    if which == "triton":
        from .triton_attn import lightning_attn_triton

        return lightning_attn_triton(
            q, k, v, slope, initial_state=initial_state, output_final_state=output_final_state, seq_lengths=lengths
        )
    run = naive_recurrence if which == "naive" else chunk_lightning
    if lengths is None:
        o, state = run(q, k, v, slope, initial_state)
        return o, (state if output_final_state else None)
    outs, states, start = [], [], 0
    for i, end in enumerate(itertools.accumulate(lengths)):
        init = initial_state[i : i + 1] if initial_state is not None else None
        o, state = run(q[:, start:end], k[:, start:end], v[:, start:end], slope, init)
        outs.append(o)
        states.append(state)
        start = end
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
    """One token per sequence: q, k, v [B, H, D]; fp32 `state` [N, H, D, Dv] updated in place (rows `state_index`).

    Rows of `state_index` must be distinct (two batch rows writing one state would race).
    """
    _check_common(q, k, v, slope, rank=3)
    B, H, D = q.shape
    Dv = v.shape[-1]
    if state.dtype != torch.float32 or state.dim() != 4 or tuple(state.shape[1:]) != (H, D, Dv):
        raise ValueError(f"state must be fp32 [N, {H}, {D}, {Dv}], got {state.dtype} {tuple(state.shape)}")
    if state.device != q.device:
        raise ValueError(f"state is on {state.device}, inputs on {q.device}")
    if state_index is None and state.shape[0] != B:
        raise ValueError(f"state has {state.shape[0]} rows for a batch of {B}; pass state_index to pick rows")
    if state_index is not None and (tuple(state_index.shape) != (B,) or state_index.dtype.is_floating_point):
        raise ValueError(f"state_index must be an integer tensor of shape [{B}], got {tuple(state_index.shape)}")
    which = _resolve(impl, q.device, (D, Dv))
    if which == "triton":
        if not state.is_contiguous():
            raise ValueError("the Triton decode updates the state in place and needs it contiguous")
        from .triton_attn import lightning_decode_triton

        return lightning_decode_triton(q, k, v, slope, state, state_index)
    if which == "naive":
        rows = state_index if state_index is not None else torch.arange(B, device=q.device)
        o, new = naive_recurrence(q[:, None], k[:, None], v[:, None], slope, state[rows])
        state[rows] = new
        return o[:, 0]
    return decode_step(q, k, v, slope, state, state_index)
