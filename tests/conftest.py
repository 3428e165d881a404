"""Shared test setup: an in-process `mmx` fixture, the shared fixture plugins; `gpu` tests skip without CUDA; Triton
runs interpreted on CPUs.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when a Triton module is first imported — by whichever test
folder gets there first — so it is set here, before any test module is collected.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# A shell starts a background job with Ctrl-C ignored, and subprocesses inherit that: the tests that press Ctrl-C on
# an `mmx` subprocess need it delivered however pytest was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Fixtures several test folders share live in tests/plugins/ (a conftest reaches only its own folder).
sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest_plugins = ["plugins.runs", "plugins.hf_models", "plugins.bench_runs", "plugins.ruler_data", "plugins.gloo"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mmx(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `mmx ARGS…` in this process, as the console script does; returns (exit code, stdout, stderr)."""
    from mmx.commands.app import main

    def run(*args: object) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return exit_info.value.code or 0, captured.out, captured.err

    return run
