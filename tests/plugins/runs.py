"""Shared pieces of the CLI tests: the small sweep they run, an in-process `mmx`, and readers for a run directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

# Random tiny weights, two short-answer tasks (vt answers in 30 tokens, qa_1 in 32) at 1k tokens, two samples each.
TINY_ARGS = ("--model", "random:tiny", "--tasks", "vt,qa_1", "--lengths", "1k", "--samples", "2")


def _read_records(run_dir: Path) -> list[dict]:
    records = []
    for line in (Path(run_dir) / "samples.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a torn line left by a killed writer
            continue
    return records


def _outcome(records: list[dict]) -> list[tuple]:
    return sorted((r["task"], r["length"], r["index"], r["status"], r["prediction"], r["score"]) for r in records)


@pytest.fixture(scope="session")
def tiny_args() -> tuple[str, ...]:
    return TINY_ARGS


@pytest.fixture
def read_records() -> Callable[[Path], list[dict]]:
    """Every well-formed line of a run's samples.jsonl."""
    return _read_records


@pytest.fixture
def outcome() -> Callable[[list[dict]], list[tuple]]:
    """What must match between an interrupted-and-resumed run and an uninterrupted one: keys, predictions, scores."""
    return _outcome
