"""Triton kernels against the token recurrence: outputs, final states, gradients, packed sequences, decode.

Each test runs on the CPU through Triton's interpreter (fp32, fp16) and, where CUDA is present, compiled on the GPU
(bf16, fp16, fp32; marked `gpu`). Errors are relative RMS against the fp32 recurrence on the same (rounded) inputs.
"""

from __future__ import annotations

import pytest
import torch

from mmx.kernels import lightning_attn, lightning_decode, naive_recurrence, naive_recurrence_grads
from mmx.kernels.plan import KernelConfig
from mmx.kernels.testing import minimax_slopes, random_qkv, rel_rms

_interp = pytest.mark.skipif(torch.cuda.is_available(), reason="compiled Triton on this machine: see the cuda cases")

# (device, dtype, tolerance): 16-bit inputs round the intra-block products (and, for bf16, the state operand) to the
# input precision. fp32 on the GPU (three-pass tf32) is checked at a million tokens in test_gpu_long.py.
CASES = [
    pytest.param("cpu", torch.float32, 1e-5, id="interp-fp32", marks=_interp),
    pytest.param("cpu", torch.float16, 2e-3, id="interp-fp16", marks=_interp),
    pytest.param("cuda", torch.bfloat16, 1.5e-2, id="cuda-bf16", marks=pytest.mark.gpu),
    pytest.param("cuda", torch.float16, 2e-3, id="cuda-fp16", marks=pytest.mark.gpu),
]
# Shapes (T, H, D, Dv): odd lengths; small dims where T is long so the interpreter stays quick.
SHAPES = [(1, 2, 16, 16), (63, 2, 32, 16), (257, 3, 16, 32), (1000, 2, 16, 16), (130, 1, 64, 64), (70, 1, 128, 128)]
# Block/segment layouts: the default plan, segments cut mid-block (80 = 32 + 32 + 16), split value/key columns.
CONFIGS = {
    "default": KernelConfig(),
    "seg80": KernelConfig(chunk=32, segment=80, bwd_chunk=16),
    "split": KernelConfig(chunk=16, segment=48, value_split=2, bwd_chunk=32, bwd_key_split=2),
}


def _attn_triton(config: KernelConfig, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    from mmx.kernels.triton_attn import lightning_attn_triton

    return lightning_attn_triton(**kwargs, config=config)


def _triton_grads(config: KernelConfig, inputs: list[torch.Tensor], slope: torch.Tensor, cotangents: list,
                  lengths: list[int] | None = None) -> list[torch.Tensor]:  # fmt: skip
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    o, s = _attn_triton(config, q=leaves[0], k=leaves[1], v=leaves[2], slope=slope, initial_state=leaves[3],
                        output_final_state=True, seq_lengths=lengths)  # fmt: skip
    torch.autograd.backward([o, s], cotangents)
    return [x.grad for x in leaves]


def _reference_grads(inputs: list[torch.Tensor], slope: torch.Tensor, cotangents: list, lengths: list[int]) -> list:
    """The recurrence's gradients, one packed sequence at a time."""
    q, k, v, h0 = inputs
    go, gs = cotangents
    parts, start = [], 0
    for i, n in enumerate(lengths):
        rows = slice(start, start + n)
        parts.append(naive_recurrence_grads(q[:, rows], k[:, rows], v[:, rows], slope, h0[i : i + 1], go[:, rows],
                                            gs[i : i + 1]))  # fmt: skip
        start += n
    dq, dk, dv, dh0 = (torch.cat(p, dim=1 if j < 3 else 0) for j, p in enumerate(zip(*parts, strict=True)))
    return [dq, dk, dv, dh0]


@pytest.mark.parametrize(("device", "dtype", "tol"), CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-H{}-D{}x{}".format(*s))
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_forward(device: str, dtype: torch.dtype, tol: float, shape: tuple[int, ...], with_h0: bool) -> None:
    T, H, D, Dv = shape
    torch.manual_seed(T * 7 + H)
    q, k, v = random_qkv(2, T, H, D, Dv, dtype=dtype, device=device)
    slope = minimax_slopes(H, device=device)
    h0 = torch.randn(2, H, D, Dv, device=device) if with_h0 else None
    o_ref, s_ref = naive_recurrence(q, k, v, slope, h0)
    o, s = lightning_attn(q, k, v, slope, initial_state=h0, output_final_state=True, impl="triton")
    assert o.dtype == dtype and s.dtype == torch.float32
    assert rel_rms(o, o_ref) < tol
    assert rel_rms(s, s_ref) < tol


# The outputs kernel's two forms, at block sizes that put the heads below on different sides of FACTOR_LIMIT.
FORMS = {
    "factored-16rows": KernelConfig(chunk=16, segment=48),
    "factored-64rows": KernelConfig(chunk=64, segment=128),
    "factored-split": KernelConfig(chunk=32, segment=80, value_split=2),
    "masked": KernelConfig(fwd_form="masked", chunk=32, segment=80),
}


@pytest.mark.parametrize(("device", "dtype", "tol"), CASES)
@pytest.mark.parametrize("config", list(FORMS), ids=list(FORMS))
def test_forward_forms_and_steep_decays(device: str, dtype: torch.dtype, tol: float, config: str) -> None:
    """Each head goes to the walk its decay allows (0.02: factored at any block size; 0.9: at 16-64 rows; 3.0: at
    16 rows only, masked otherwise). A head no launch took would stay NaN; one factored out of range would overflow."""
    torch.manual_seed(9)
    T, D = 200, 32
    q, k, v = random_qkv(1, T, 3, D, dtype=dtype, device=device)
    slope = torch.tensor([0.02, 0.9, 3.0], device=device)
    h0 = torch.randn(1, 3, D, D, device=device)
    o_ref, s_ref = naive_recurrence(q, k, v, slope, h0)
    o, s = _attn_triton(FORMS[config], q=q, k=k, v=v, slope=slope, initial_state=h0, output_final_state=True)
    for h in range(3):
        assert rel_rms(o[:, :, h], o_ref[:, :, h]) < tol, h
        assert rel_rms(s[:, h], s_ref[:, h]) < tol, h


@pytest.mark.parametrize(("device", "dtype", "tol"), CASES)
@pytest.mark.parametrize(
    ("seqlen", "config"),
    [(t, c) for t in (1, 63, 257) for c in CONFIGS] + [(1000, "default")],  # the interpreter is slow at T = 1000
    ids=lambda x: f"T{x}" if isinstance(x, int) else x,
)
def test_backward(device: str, dtype: torch.dtype, tol: float, seqlen: int, config: str) -> None:
    """dq, dk, dv and the initial state's gradient, from gradients on both the output and the final state."""
    torch.manual_seed(seqlen)
    H, D = 2, 32
    q, k, v = random_qkv(1, seqlen, H, D, dtype=dtype, device=device)
    slope = minimax_slopes(H, layer=40, device=device)
    h0 = torch.randn(1, H, D, D, device=device)
    cotangents = [torch.randn(1, seqlen, H, D, device=device, dtype=dtype), torch.randn(1, H, D, D, device=device)]

    got = _triton_grads(CONFIGS[config], [q, k, v, h0], slope, cotangents)
    want = naive_recurrence_grads(q, k, v, slope, h0, *cotangents)
    for name, g, w in zip(("dq", "dk", "dv", "dh0"), got, want, strict=True):
        assert g.dtype == (torch.float32 if name == "dh0" else dtype)
        assert rel_rms(g, w) < tol, name


@pytest.mark.parametrize(("device", "dtype", "tol"), CASES)
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_packed_sequences(device: str, dtype: torch.dtype, tol: float, config: str) -> None:
    """Ragged packed sequences (length 1 and 0 among them): outputs, final states and all gradients."""
    lengths = [1, 100, 0, 37, 1, 130]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=device)
    torch.manual_seed(5)
    H, D = 2, 32
    q, k, v = random_qkv(1, sum(lengths), H, D, dtype=dtype, device=device)
    slope = minimax_slopes(H, device=device)
    h0 = torch.randn(len(lengths), H, D, D, device=device)
    cotangents = [torch.randn_like(q), torch.randn(len(lengths), H, D, D, device=device)]

    o, s = _attn_triton(CONFIGS[config], q=q, k=k, v=v, slope=slope, initial_state=h0, output_final_state=True,
                        seq_lengths=lengths)  # fmt: skip
    o_ref, s_ref = lightning_attn(
        q, k, v, slope, initial_state=h0, output_final_state=True, cu_seqlens=cu, impl="naive"
    )
    assert rel_rms(o, o_ref) < tol
    assert rel_rms(s, s_ref) < tol
    assert torch.equal(s[2], h0[2])  # the empty sequence passes its state through
    got = _triton_grads(CONFIGS[config], [q, k, v, h0], slope, cotangents, lengths)
    want = _reference_grads([q, k, v, h0], slope, cotangents, lengths)
    for name, g, w in zip(("dq", "dk", "dv", "dh0"), got, want, strict=True):
        assert rel_rms(g, w) < tol, name


@pytest.mark.parametrize(("device", "dtype", "tol"), CASES)
def test_strided_inputs_and_dispatcher_packing(device: str, dtype: torch.dtype, tol: float) -> None:
    """q, k, v as slices of one interleaved projection (how the model calls it), packed through cu_seqlens."""
    torch.manual_seed(6)
    H, D, T = 2, 32, 90
    qkv = torch.randn(1, T, H, 3 * D, device=device).mul_(0.5).to(dtype)  # [B, T, H, 3D]
    q, k, v = qkv.split(D, dim=-1)  # [B, T, H, D] views, not contiguous
    slope = minimax_slopes(H, device=device)
    cu = torch.tensor([0, 20, 90], device=device)
    o, _ = lightning_attn(q, k, v, slope, cu_seqlens=cu, impl="triton")
    o_ref, _ = lightning_attn(q, k, v, slope, cu_seqlens=cu, impl="naive")
    assert rel_rms(o, o_ref) < tol


@pytest.mark.parametrize(("device", "dtype", "tol"), CASES)
@pytest.mark.parametrize("indexed", [False, True], ids=["batch-rows", "state-index"])
def test_decode(device: str, dtype: torch.dtype, tol: float, indexed: bool) -> None:
    """Three decode steps update the fp32 state in place exactly like the recurrence; other pool rows untouched."""
    torch.manual_seed(7)
    B, H, D, Dv, pool = 3, 2, 32, 64, 5
    slope = minimax_slopes(H, device=device)
    index = torch.tensor([4, 0, 2], device=device) if indexed else None
    state = torch.randn(pool if indexed else B, H, D, Dv, device=device)
    expected = state.clone()
    rows = index if indexed else torch.arange(B, device=device)
    for _ in range(3):
        q, k, v = (x[:, 0] for x in random_qkv(B, 1, H, D, Dv, dtype=dtype, device=device))
        o = lightning_decode(q, k, v, slope, state, state_index=index, impl="triton")
        o_ref, new = naive_recurrence(q[:, None], k[:, None], v[:, None], slope, expected[rows])
        expected[rows] = new
        assert o.dtype == dtype
        assert rel_rms(o, o_ref[:, 0]) < tol
    assert rel_rms(state, expected) < 1e-5


def test_decode_rejects_rows_outside_the_pool() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    H, D = 1, 16
    state = torch.randn(2, H, D, D, device=device)
    before = state.clone()
    q, k, v = (x[:, 0] for x in random_qkv(2, 1, H, D, device=device))
    o = lightning_decode(q, k, v, minimax_slopes(H, device=device), state, state_index=torch.tensor([1, 7]).to(device),
                         impl="triton")  # fmt: skip
    assert torch.isnan(o[1]).all() and not torch.isnan(o[0]).any()
    assert torch.equal(state[0], before[0])


def test_empty_buffers_are_poisoned() -> None:
    """The NaN fill this suite relies on is in force."""
    assert torch.isnan(torch.empty(3)).all() and torch.isnan(torch.empty_like(torch.zeros(2))).all()


def test_launches_shrink_until_they_fit() -> None:
    """A launch that needs more shared memory than the GPU has is retried with one stage, then half the rows."""
    from triton.runtime.errors import OutOfResources

    from mmx.kernels.triton_fwd import fitting

    tried = []

    def launch(config: KernelConfig) -> str:
        tried.append((config.fwd_chunk(128, torch.float32), config.fwd_stages))
        if tried[-1] != (32, 1):
            raise OutOfResources(294912, 232448, "shared memory")
        return "ran"

    x = torch.zeros(1, 1, 1, 128)
    assert fitting("fwd_out", launch, KernelConfig(), x, 128) == "ran"
    assert tried == [(64, 2), (64, 1), (32, 1)]
    tried.clear()
    assert fitting("fwd_out", launch, KernelConfig(), x, 128) == "ran"  # remembered: no failing attempts
    assert tried == [(32, 1)]
    with pytest.raises(OutOfResources):
        fitting("bwd_dq", lambda c: launch(c.with_(chunk=64)), KernelConfig(), x, 128)  # never fits
