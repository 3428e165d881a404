"""Shared pieces of the throughput tests: a reader for a run's bench records (`mmx` comes from tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def bench_records() -> Callable[[Path], list[dict]]:
    """Every line of a run's bench.jsonl, parsed (a malformed line fails the test)."""

    def read(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (Path(run_dir) / "bench.jsonl").read_text().splitlines()]

    return read
