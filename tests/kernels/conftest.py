"""Kernel tests: Triton runs on CPU tensors through its interpreter unless a GPU is present.

The root tests/conftest.py sets TRITON_INTERPRET=1 on CPU-only machines before any test module is collected (Triton
reads it when a kernel is decorated); on a GPU machine the same tests run compiled on CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch


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
