"""The public entry points: which path runs where, and one clear ValueError for inputs that do not fit."""

from __future__ import annotations

import pytest
import torch

from mmx.kernels import lightning_attn, lightning_decode
from mmx.kernels.dispatch import auto_impl
from mmx.kernels.testing import minimax_slopes, random_qkv, rel_rms

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU runs Triton through its interpreter


def _inputs(B: int = 1, T: int = 8, H: int = 2, D: int = 16) -> tuple[torch.Tensor, ...]:
    return (*random_qkv(B, T, H, D), minimax_slopes(H))


def test_auto_is_torch_on_cpu() -> None:
    assert auto_impl(torch.device("cpu")) == "torch"


@pytest.mark.gpu
def test_auto_is_triton_on_cuda() -> None:
    assert auto_impl(torch.device("cuda")) == "triton"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, k, v, s: (q[0], k, v, s), "q must have 4 dims"),
        (lambda q, k, v, s: (q, k[:, :4], v, s), "shapes do not match"),
        (lambda q, k, v, s: (q, k, v[:, :, :1], s), "shapes do not match"),
        (lambda q, k, v, s: (q, k.half(), v, s), "must share one of"),
        (lambda q, k, v, s: (q, k, v, s[:1]), "slope must have shape"),
        (lambda q, k, v, s: (q.long(), k.long(), v.long(), s), "must share one of"),
    ],
    ids=["rank", "k-shape", "v-heads", "dtype-mix", "slope", "integer"],
)
def test_bad_inputs_raise_value_error(change, message: str) -> None:  # noqa: ANN001
    q, k, v, s = change(*_inputs())
    with pytest.raises(ValueError, match=message):
        lightning_attn(q, k, v, s)


def test_bad_packing_and_state_raise_value_error() -> None:
    q, k, v, s = _inputs(B=2)
    with pytest.raises(ValueError, match="batch size 1"):
        lightning_attn(q, k, v, s, cu_seqlens=torch.tensor([0, 8]))
    q, k, v, s = _inputs()
    with pytest.raises(ValueError, match="from 0 to T=8"):
        lightning_attn(q, k, v, s, cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="non-decreasing"):
        lightning_attn(q, k, v, s, cu_seqlens=torch.tensor([0, 6, 3, 8]))
    with pytest.raises(ValueError, match="integer"):
        lightning_attn(q, k, v, s, cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        lightning_attn(q, k, v, s, initial_state=torch.zeros(2, 2, 16, 16), cu_seqlens=torch.tensor([0, 3, 5, 8]))
    with pytest.raises(ValueError, match="unknown impl"):
        lightning_attn(q, k, v, s, impl="cuda")


def test_triton_rejects_unsupported_head_dim_but_auto_falls_back() -> None:
    q, k, v, s = _inputs(D=48)
    with pytest.raises(ValueError, match="head dims"):
        lightning_attn(q, k, v, s, impl="triton")
    o, _ = lightning_attn(q, k, v, s)
    o_ref, _ = lightning_attn(q, k, v, s, impl="naive")
    assert rel_rms(o, o_ref) < 1e-5


def test_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mmx.kernels.triton_attn.interpreted", lambda: False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        lightning_attn(*_inputs(), impl="triton")


@pytest.mark.parametrize("impl", ["torch", "naive", "triton"])
def test_zero_length_passes_the_state_through(impl: str) -> None:
    device = TRITON_DEVICE if impl == "triton" else "cpu"
    q, k, v, s = (x.to(device) for x in _inputs(T=0))
    h0 = torch.randn(1, 2, 16, 16, device=device)
    o, state = lightning_attn(q, k, v, s, initial_state=h0, output_final_state=True, impl=impl)
    assert o.shape == (1, 0, 2, 16)
    assert torch.equal(state, h0)


def test_decode_validates_state_and_index() -> None:
    q, k, v = (x[:, 0] for x in random_qkv(2, 1, 2, 16))
    s = minimax_slopes(2)
    with pytest.raises(ValueError, match="state must be fp32"):
        lightning_decode(q, k, v, s, torch.zeros(2, 2, 16, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match="pass state_index"):
        lightning_decode(q, k, v, s, torch.zeros(3, 2, 16, 16))
    with pytest.raises(ValueError, match="state_index must be"):
        lightning_decode(q, k, v, s, torch.zeros(3, 2, 16, 16), state_index=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="contiguous"):
        pool = torch.zeros(2, 2, 16, 32, device=TRITON_DEVICE)[..., :16]
        lightning_decode(*(x.to(TRITON_DEVICE) for x in (q, k, v, s)), pool, impl="triton")


@pytest.mark.parametrize("impl", ["torch", "naive"])
def test_decode_paths_agree(impl: str) -> None:
    torch.manual_seed(0)
    q, k, v = (x[:, 0] for x in random_qkv(2, 1, 2, 16))
    s = minimax_slopes(2)
    pool = torch.randn(4, 2, 16, 16)
    index = torch.tensor([3, 1])
    mine, ref = pool.clone(), pool.clone()
    o = lightning_decode(q, k, v, s, mine, state_index=index, impl=impl)
    o_ref, new = lightning_attn(q[:, None], k[:, None], v[:, None], s, initial_state=ref[index],
                                output_final_state=True, impl="naive")  # fmt: skip
    ref[index] = new
    assert rel_rms(o, o_ref[:, 0]) < 1e-6
    assert torch.equal(mine[[0, 2]], pool[[0, 2]]) and rel_rms(mine, ref) < 1e-6
