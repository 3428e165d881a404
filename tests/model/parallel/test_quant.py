"""8-bit experts: the stored weights within each format's rounding, both matmul paths against their plain reference,
and a quantized model against the full-precision one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmx.errors import MmxError
from mmx.model.backends.base import load_backend
from mmx.model.parallel.quant import QuantizedLinear, check_kind, quantize_rows


def _weight() -> torch.Tensor:
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(0))
    w[5] = 0.0  # an all-zero row must survive (scale 1, not a division by zero)
    return w


@pytest.mark.parametrize(("kind", "relative"), [("int8", 1 / 254), ("fp8", 1 / 16)])
def test_rows_round_within_the_format(kind, relative):
    w = _weight()
    qweight, scale = quantize_rows(w, kind)
    assert qweight.dtype == {"int8": torch.int8, "fp8": torch.float8_e4m3fn}[kind] and scale.shape == (48,)
    error = (qweight.float() * scale[:, None] - w).abs()
    row_max = w.abs().amax(dim=1, keepdim=True)
    assert (error <= relative * row_max + 1e-12).all()  # int8: half a step of max/127; e4m3: 3 mantissa bits
    assert (qweight[5].float() == 0).all()


def test_int8_multiplies_by_the_dequantized_weight():
    layer = QuantizedLinear.from_linear(_linear(), "int8")
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer(x), F.linear(x, layer.dequantize(torch.float32)))


def test_fp8_is_one_scaled_matmul_of_rowwise_quantized_activations():
    layer = QuantizedLinear.from_linear(_linear(), "fp8")
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(2))
    flat = x.reshape(-1, 64)
    x_scale = flat.abs().amax(dim=1, keepdim=True) / 448
    x_q = (flat / x_scale).to(torch.float8_e4m3fn).float() * x_scale  # the activations the matmul sees
    reference = F.linear(x_q, layer.dequantize(torch.float32)).view(3, 7, 48)
    assert torch.allclose(layer(x), reference, rtol=1e-5, atol=1e-5)
    exact = F.linear(x, _linear().weight)
    assert (layer(x) - exact).norm() / exact.norm() < 0.1  # fp8 rounding of weights and activations


def _linear() -> torch.nn.Linear:
    linear = torch.nn.Linear(64, 48, bias=False)
    linear.weight.data.copy_(_weight())
    return linear


@pytest.mark.parametrize(("kind", "relative"), [("int8", 1e-3), ("fp8", 1e-2)])
def test_a_quantized_model_stays_close_to_full_precision(kind, relative):
    full = load_backend("random:tiny").model
    quantized = load_backend("random:tiny", quantize_experts=kind).model
    expert = quantized.model.layers[0].block_sparse_moe.experts[0]
    assert isinstance(expert.w1, QuantizedLinear) and isinstance(quantized.lm_head.weight, torch.nn.Parameter)
    ids = torch.randint(0, 259, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = full(ids), quantized(ids)
    assert 0 < (got - want).norm() / want.norm() < relative


def test_an_unknown_kind_is_one_error():
    assert check_kind("none") is None and check_kind("fp8") == "fp8"
    with pytest.raises(MmxError, match="unknown expert quantization 'int4'"):
        check_kind("int4")


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_on_a_gpu_the_bf16_paths_match_their_reference(kind):
    """fp8 runs torch._scaled_mm's CUDA kernel (Ada/Hopper) or the dequantized fallback; both agree with the plain
    reference to bf16 rounding."""
    layer = QuantizedLinear.from_linear(_linear().cuda(), kind)
    x = torch.randn(5, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(4)).bfloat16()
    if kind == "fp8" and torch.cuda.get_device_capability() >= (8, 9):
        x_scale = x.float().abs().amax(dim=1, keepdim=True) / 448
        x = ((x.float() / x_scale).to(torch.float8_e4m3fn).float() * x_scale).bfloat16()  # already on the fp8 grid
    reference = F.linear(x.float(), layer.dequantize(torch.float32))
    got = layer(x)
    assert got.dtype == torch.bfloat16
    assert (got.float() - reference).norm() / reference.norm() < 1e-2
