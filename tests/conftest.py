"""Shared test setup: the `gpu` marker skips without CUDA; Triton runs in its interpreter on CPU-only machines.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when a Triton module is first imported — by whichever test
folder gets there first — so it is set here, before any test module is collected.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
