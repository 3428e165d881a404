"""The ceilings MFU and bandwidth figures are quoted against: a datasheet table for common GPUs, or measured.

Datasheet numbers are dense bf16/fp16 tensor-core rates and HBM bandwidth. Measuring times a large matrix product
in the run's dtype and a large device-to-device copy (bytes read plus written), which is what the GPU at hand actually
reaches; unknown devices are always measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch


@dataclass(frozen=True)
class DevicePeaks:
    """Peak dense matmul rate and memory bandwidth of one device, and where the numbers came from."""

    device: str
    matmul_tflops: float | None
    bandwidth_tbs: float | None
    source: str  # "datasheet" or "measured (<dtype>)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# (substring of torch's device name, dense bf16 TFLOP/s, HBM TB/s); the first match wins, so variants go first.
DATASHEET: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.4, 4.8),
    ("H100 NVL", 835.0, 3.9),
    ("H100 PCIe", 756.0, 2.0),
    ("H100", 989.4, 3.35),  # SXM5, "NVIDIA H100 80GB HBM3"
    ("A100-SXM4-80GB", 312.0, 2.039),
    ("A100 80GB PCIe", 312.0, 1.935),
    ("A100", 312.0, 1.555),
)
_HALF = (torch.bfloat16, torch.float16)


def device_name(device: torch.device) -> str:
    """torch's name for a CUDA device; `cpu` otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def datasheet_peaks(name: str) -> tuple[float, float] | None:
    """(TFLOP/s, TB/s) for a device name the table knows, else None."""
    for key, tflops, tbs in DATASHEET:
        if key in name:
            return tflops, tbs
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, generator: torch.Generator) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)  # random: zeros run faster than data
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    return 2.0 * n**3 / _median_seconds(partial(torch.matmul, a, b), device, warmup=3, repeats=10) / 1e12


def _copy_tbs(device: torch.device, megabytes: int, generator: torch.Generator) -> float:
    src = torch.empty(megabytes * 10**6 // 4, device=device, dtype=torch.float32).uniform_(generator=generator)
    dst = torch.empty_like(src)
    seconds = _median_seconds(partial(dst.copy_, src), device, warmup=3, repeats=10)
    return 2.0 * src.numel() * 4 / seconds / 1e12  # bytes read plus bytes written


def measure_peaks(
    device: torch.device, dtype: torch.dtype, matmul_size: int = 8192, copy_mb: int = 2048
) -> DevicePeaks:
    """Time an n×n×n product of random `dtype` matrices and a copy of `copy_mb` MB (median of 10 after 3 warm-ups)."""
    generator = torch.Generator(device=device).manual_seed(0)
    tflops = _matmul_tflops(device, dtype, matmul_size, generator)
    tbs = _copy_tbs(device, copy_mb, generator)
    return DevicePeaks(device_name(device), tflops, tbs, f"measured ({str(dtype).removeprefix('torch.')})")


def detect_peaks(device: torch.device, dtype: torch.dtype, measure: bool = False) -> DevicePeaks:
    """Datasheet peaks for a known GPU running bf16/fp16; measured when asked, or when the table cannot answer."""
    name = device_name(device)
    known = datasheet_peaks(name) if device.type == "cuda" and dtype in _HALF else None
    if known is not None and not measure:
        return DevicePeaks(name, known[0], known[1], "datasheet")
    if device.type == "cpu" and not measure:
        return DevicePeaks(name, None, None, "unknown (pass --peaks measure)")
    on_gpu = device.type == "cuda"
    return measure_peaks(device, dtype, matmul_size=8192 if on_gpu else 1024, copy_mb=2048 if on_gpu else 256)
