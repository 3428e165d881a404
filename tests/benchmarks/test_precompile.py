"""The fla precompile helper's slicing, on stand-in autotuners (fla itself is optional and needs a GPU)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import triton
import triton.language as tl

from benchmarks.kernels.precompile import main, slice_autotuners
from mmx.workflows.bench.kernels import fla_available


@triton.jit
def _copy(x, y, BLOCK: tl.constexpr):
    tl.store(y + tl.arange(0, BLOCK), tl.load(x + tl.arange(0, BLOCK)))


def test_every_autotuner_gets_its_slice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [triton.Config({"BLOCK": 16}, num_warps=w) for w in (1, 2, 4, 8, 16)]
    tuned = triton.autotune(configs=configs, key=[])(_copy)
    wrapped = triton.heuristics({"BLOCK": lambda args: 16})(triton.autotune(configs=configs[:2], key=[])(_copy))
    first = types.ModuleType("fla.ops.common.fake")
    first.kernel, first.wrapped = tuned, wrapped
    second = types.ModuleType("fla.ops.simple_gla.fake")
    second.kernel = tuned  # imported by name elsewhere: sliced once, not twice
    elsewhere = types.ModuleType("not_fla.fake")
    elsewhere.kernel = triton.autotune(configs=list(configs), key=[])(_copy)
    for module in (first, second, elsewhere):
        monkeypatch.setitem(sys.modules, module.__name__, module)

    assert slice_autotuners(1, 3) == 2
    assert [c.num_warps for c in tuned.configs] == [2, 16]
    assert [c.num_warps for c in wrapped.fn.configs] == [2]
    assert len(elsewhere.kernel.configs) == 5
    assert slice_autotuners(2, 3) == 2 and len(wrapped.fn.configs) == 1  # an empty slice keeps one config


@pytest.mark.skipif(torch.cuda.is_available() and fla_available(), reason="this machine would precompile")
def test_nothing_to_do_without_gpu_or_fla(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--parts", "2"]) == 0
    assert "nothing to do" in capsys.readouterr().out
