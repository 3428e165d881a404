"""8-bit expert weights: fp8 (e4m3) or int8, one fp32 scale per output row, so MiniMax-Text-01 fits one node.

The experts are 95% of the model's 456B parameters: in bf16 they alone need 870 GB, in 8 bits 435 GB, which is what
lets 8 × 80 GB hold the model with room for a long context. Both kinds store `qweight [out, in]` and `scale [out]`
(w ≈ qweight · scale, rows scaled by their absolute maximum):

- `fp8`: activations are quantized per row on the fly and multiplied by `torch._scaled_mm` with row-wise scales (fp8
  tensor cores on Hopper and Ada; PyTorch's CPU implementation elsewhere). Where the device has no fp8 matmul, the
  weight is dequantized instead.
- `int8`: weight only — the weight is dequantized to the activations' dtype for each product. More accurate than fp8
  (8 bits of mantissa against 3) at the same memory, without the fp8 speed-up.

`dequantize` is the plain reference both are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmx.errors import MmxError

QUANT_KINDS = ("fp8", "int8")
_STORAGE = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}
_QMAX = {"fp8": 448.0, "int8": 127.0}  # largest magnitude each format holds (e4m3fn: 448)
SCALED_MM_MIN_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (8.9) and Hopper (9.0) onwards


def check_kind(kind: str | None) -> str | None:
    """None / `none` -> None; `fp8` / `int8` as given; anything else is one MmxError."""
    if kind is None or kind == "none":
        return None
    if kind not in QUANT_KINDS:
        raise MmxError(f"unknown expert quantization {kind!r}", f"use none, {' or '.join(QUANT_KINDS)}")
    return kind


def storage_bytes(kind: str | None, dtype_bytes: int) -> int:
    """Bytes per expert weight element: 1 for a quantized kind, the model dtype's size otherwise."""
    return 1 if kind else dtype_bytes


@torch.no_grad()
def quantize_rows(weight: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(qweight [out, in] in the kind's storage dtype, scale [out] fp32) with weight ≈ qweight · scale[:, None]."""
    w = weight.float()
    scale = w.abs().amax(dim=1) / _QMAX[kind]  # [out]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row keeps scale 1
    scaled = w / scale[:, None]
    if kind == "int8":
        scaled = scaled.round().clamp_(-127, 127)
    return scaled.to(_STORAGE[kind]), scale


def _scaled_mm_usable(x: torch.Tensor, qweight: torch.Tensor) -> bool:
    """Whether torch._scaled_mm takes these operands here (fp8 CUDA kernels need K and N in multiples of 16)."""
    if x.device.type == "cpu":
        return True
    if x.device.type != "cuda" or torch.cuda.get_device_capability(x.device) < SCALED_MM_MIN_CAPABILITY:
        return False
    out_features, in_features = qweight.shape
    return x.dtype == torch.bfloat16 and in_features % 16 == 0 and out_features % 16 == 0


def fp8_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ (qweight · scale)ᵀ with x quantized to fp8 per row: one `torch._scaled_mm`, output in x's dtype."""
    x_scale = (x.float().abs().amax(dim=1, keepdim=True) / _QMAX["fp8"]).clamp_(min=1e-12)  # [M, 1]
    x_q = (x.float() / x_scale).to(torch.float8_e4m3fn)
    return torch._scaled_mm(x_q, qweight.t(), scale_a=x_scale, scale_b=scale[None], out_dtype=x.dtype)


class QuantizedLinear(nn.Module):
    """A bias-free linear layer with an 8-bit weight and one fp32 scale per output row (buffers, so `.to(dtype)` on
    the model must come before quantizing: it would cast an fp8 buffer like any other float)."""

    def __init__(self, in_features: int, out_features: int, kind: str, device: torch.device | str | None = None):
        super().__init__()
        self.kind = kind
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=_STORAGE[kind], device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, kind: str) -> QuantizedLinear:
        """The 8-bit form of `linear` on its device (an empty one when it is on the meta device)."""
        weight = linear.weight
        quantized = cls(weight.shape[1], weight.shape[0], kind, device=weight.device)
        if weight.device.type != "meta":
            quantized.load_weight(weight)
        return quantized

    @torch.no_grad()
    def load_weight(self, weight: torch.Tensor) -> None:
        """Quantize `weight` [out, in] (any device and dtype) into this module's buffers, on their device."""
        if tuple(weight.shape) != tuple(self.qweight.shape):
            raise ValueError(f"weight of shape {list(weight.shape)} for a {list(self.qweight.shape)} layer")
        qweight, scale = quantize_rows(weight.to(self.qweight.device), self.kind)
        self.qweight, self.scale = qweight, scale

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight [out, in] this layer multiplies by, in `dtype` (the reference)."""
        return (self.qweight.float() * self.scale[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "fp8" and _scaled_mm_usable(x, self.qweight):
            flat = x.reshape(-1, x.shape[-1])
            return fp8_matmul(flat, self.qweight, self.scale).view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.dequantize(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}"


def quantize_experts(model: nn.Module, kind: str) -> nn.Module:
    """Replace every expert's w1, w2, w3 of `model` (meta or with weights) by its `kind` form, one at a time so the
    full-precision copies are freed as it goes; returns the model."""
    for name, module in list(model.named_modules()):
        if ".experts." not in f"{name}." or not isinstance(module, nn.Linear):
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, QuantizedLinear.from_linear(module, kind))
    return model
