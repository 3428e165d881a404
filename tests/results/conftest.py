"""Synthetic run directories written through RunStore, the way the eval and bench commands write them."""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mmx.results.store import RunStore
from mmx.tasks import RULER_TASKS

K = 1024


def run_meta(kind: str, model: dict[str, Any], params: dict[str, Any], suite: str | None = None) -> dict[str, Any]:
    """A run.json as the commands write it."""
    return {
        "kind": kind,
        "command": ["mmx", kind, "--synthetic"],
        "suite": suite,
        "model": model,
        "params": params,
        "versions": {"mmx": "0.1.0", "torch": "2.13.0"},
        "hardware": {"device": "cpu", "cpu": "test-cpu", "gpus": []},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "started_at": "2025-01-01T00:00:00+00:00",
    }


def model_desc(name: str, random_weights: bool = False) -> dict[str, Any]:
    spec = f"random:{name}" if random_weights else name
    return {"spec": spec, "name": name, "random_weights": random_weights, "dtype": "float32", "device": "cpu"}


def sample(task: str, length: int, index: int, score: float | None, status: str = "ok", **metadata: Any) -> dict:
    """One samples.jsonl record."""
    return {
        "task": task,
        "length": length,
        "index": index,
        "score": score,
        "status": status,
        "prediction": "" if score is None else "answer",
        "references": ["answer"],
        "prompt_hash": f"{task}-{length}-{index}",
        "prompt_tokens": length - 128,
        "metadata": metadata,
        "timings": {"build_s": 0.01, "generate_s": 0.1},
    }


def decaying_score(task_index: int, length: int, index: int, strength: float) -> float:
    """A deterministic per-sample score whose expectation falls with log2(length), faster for later tasks."""
    p = 1.0 - strength * (0.2 + task_index / 13) * math.log2(length / (4 * K)) / 5
    rng = random.Random(f"{task_index}/{length}/{index}")
    return 1.0 if rng.random() < max(0.0, min(1.0, p)) else rng.choice([0.0, 0.5])


def write_eval_run(
    path: Path,
    *,
    name: str = "mmx-mini",
    tasks: Sequence[str] = tuple(RULER_TASKS),
    lengths: Sequence[int] = (4 * K, 8 * K, 16 * K),
    samples: int = 4,
    strength: float = 1.0,
    random_weights: bool = False,
    keep: Callable[[str, int, int], bool] = lambda task, length, index: True,
    oom: Callable[[str, int], bool] = lambda task, length: False,
    source: dict[str, Any] | None = None,
) -> Path:
    """An eval run of `tasks` × `lengths` × `samples`; `keep` drops samples (a run in progress), `oom` fails cells;
    `source` is the recorded prompt provenance (none: a run from before sources were recorded)."""
    store = RunStore(path)
    params = {"tasks": list(tasks), "lengths": list(lengths), "samples": samples, "seed": 42, "answer_prefix": True}
    if source is not None:
        params["source"] = source
    store.open(run_meta("eval", model_desc(name, random_weights), params, suite="ruler"))
    for length in lengths:
        for t, task in enumerate(tasks):
            for index in range(samples):
                if not keep(task, length, index):
                    continue
                if oom(task, length):
                    store.append_sample(sample(task, length, index, None, status="oom"))
                else:
                    store.append_sample(sample(task, length, index, decaying_score(t, length, index, strength)))
    return path


def write_niah_run(path: Path, lengths: Sequence[int], depths: Sequence[float], name: str = "mmx-mini") -> Path:
    """A needle run: sample i at depth index i % len(depths), one sample per depth; deep needles fail at length."""
    store = RunStore(path)
    params = {"tasks": ["niah"], "lengths": list(lengths), "samples": len(depths), "seed": 0, "depths": len(depths)}
    store.open(run_meta("eval", model_desc(name), params, suite="niah"))
    for length in lengths:
        for index, depth in enumerate(depths):
            found = length <= 16 * K or depth < 50 or (depth + length / K) % 3 < 1
            store.append_sample(sample("niah", length, index, float(found), depth=depth))
    return path


def write_bench_run(
    path: Path, lengths: Sequence[int], oom_from: int, name: str = "mmx-mini", decode_batches: Sequence[int] = (1,)
) -> Path:
    """Prefill (batch 1) and decode (each batch size) records as `mmx bench throughput` writes them; every length
    from `oom_from` on ran out of memory (the meter still read a peak, which a report must not plot)."""
    store = RunStore(path)
    store.open(run_meta("bench", model_desc(name), {"lengths": list(lengths), "batch_sizes": list(decode_batches)}))
    cells = [("prefill", 1, 40_000.0)] + [("decode", b, 90.0 * b) for b in decode_batches]
    for bench, batch, base in cells:
        for length in lengths:
            if length >= oom_from:
                record = {"tokens_per_s": None, "ttft_s": None, "peak_mem_gb": 79.5, "status": "oom"}
            else:
                record = {
                    "tokens_per_s": base / (1 + length / (256 * K)),
                    "ttft_s": length / base if bench == "prefill" else None,
                    "peak_mem_gb": 2.0 + batch * length / (64 * K),
                    "status": "ok",
                    "mfu" if bench == "prefill" else "bandwidth_util": 0.42,
                }
            store.append_bench(
                {"bench": bench, "model": name, "impl": "mmx hybrid", "length": length, "batch_size": batch, **record}
            )
    return path


def write_lm_eval_run(path: Path, results: dict[str, dict[str, Any]] | None) -> Path:
    store = RunStore(path)
    store.open(run_meta("lm-eval", model_desc("mmx-mini"), {"tasks": sorted(results or {}), "limit": 10}))
    if results is not None:
        (path / "lm_eval_results.json").write_text(json.dumps(results))
    return path


@pytest.fixture(scope="session")
def synth() -> ModuleType:
    """This module, so tests can call its writers (conftest modules are not importable by name under importlib)."""
    return sys.modules[__name__]
