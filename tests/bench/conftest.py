"""Shared pieces of the throughput tests: an in-process `mmx`, and a reader for a run's bench records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def mmx(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `mmx ARGS…` in this process; returns (exit code, stdout, stderr)."""
    from mmx.app import main

    def run(*args: object) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return exit_info.value.code or 0, captured.out, captured.err

    return run


@pytest.fixture
def bench_records() -> Callable[[Path], list[dict]]:
    """Every line of a run's bench.jsonl, parsed (a malformed line fails the test)."""

    def read(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (Path(run_dir) / "bench.jsonl").read_text().splitlines()]

    return read
