"""Kernel tests: Triton runs on CPU tensors through its interpreter unless a GPU is present.

Triton decides interpreter or compiler when a kernel is decorated, i.e. when mmx.kernels' Triton modules are first
imported; those modules are imported lazily, so setting TRITON_INTERPRET here (at collection, before any test runs)
is early enough. Only CPU-only machines get the interpreter: on a GPU machine the same tests run compiled on CUDA.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty / torch.empty_like return NaN-filled floats, so memory a kernel leaves unwritten fails loudly."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args: object, **kwargs: object) -> torch.Tensor:
        out = real_empty(*args, **kwargs)
        return out.fill_(math.nan) if out.is_floating_point() else out

    def empty_like(*args: object, **kwargs: object) -> torch.Tensor:
        out = real_empty_like(*args, **kwargs)
        return out.fill_(math.nan) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)
