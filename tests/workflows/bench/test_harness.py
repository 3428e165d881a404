"""The throughput harness on scripted runners: OOM and errors recorded while the sweep goes on, resume, budget."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mmx.results.store import RunStore
from mmx.workflows.bench.peaks import DevicePeaks
from mmx.workflows.bench.subjects import Subject
from mmx.workflows.bench.throughput import DECODE_WARMUP_STEPS, Plan, ThroughputBench, measure_key

CPU = torch.device("cpu")
PEAKS = DevicePeaks("cpu", 1.0, 1.0, "test")


class ScriptedRunner:
    """A model that fails on purpose: prefill raises at `oom_from` tokens and beyond, expand at `oom_batch` rows and
    beyond; `broken_batch` raises a non-memory error. Counts what it was asked to do."""

    def __init__(self, oom_from: int | None = None, oom_batch: int | None = None, broken_batch: int | None = None):
        self.oom_from, self.oom_batch, self.broken_batch = oom_from, oom_batch, broken_batch
        self.details = {"runner": "scripted"}
        self.chunk_size = None
        self.prefills: list[int] = []
        self.steps = 0

    def prefill(self, input_ids: torch.Tensor) -> Any:
        length = input_ids.shape[1]
        self.prefills.append(length)
        if self.oom_from is not None and length >= self.oom_from:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 48.00 GiB")
        return {"length": length}

    def expand(self, cache: Any, batch_size: int, extra_tokens: int) -> Any:
        if self.oom_batch is not None and batch_size >= self.oom_batch:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        if batch_size == self.broken_batch:
            raise ValueError("a bug, not a memory error")
        return {**cache, "rows": batch_size}

    def decode(self, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        assert tokens.shape == (cache["rows"],)
        self.steps += 1
        return tokens


def subject(runner: ScriptedRunner, label: str = "scripted", max_context: int | None = None) -> Subject:
    return Subject(
        label=label,
        family="scripted",
        arch=None,
        config=None,
        vocab_size=100,
        max_context=max_context,
        info={"name": label},
        build=lambda: runner,
    )


def bench(tmp_path, plan: Plan) -> tuple[ThroughputBench, RunStore, list[str]]:
    store = RunStore(tmp_path / "run")
    store.open({"kind": "bench", "params": plan.params()})
    warnings: list[str] = []
    return ThroughputBench(plan, store, CPU, PEAKS, torch.float32, warn=warnings.append), store, warnings


def test_an_out_of_memory_length_is_recorded_and_the_sweep_goes_on(tmp_path):
    runner = ScriptedRunner(oom_from=48)
    harness, store, warnings = bench(tmp_path, Plan(lengths=[16, 48, 32], batch_sizes=[1], decode_steps=2, repeats=1))
    harness.run([subject(runner)])
    by_key = {measure_key(r): r for r in store.bench()}
    oom = by_key[("prefill", "scripted", 48, 1)]
    assert oom["status"] == "oom" and oom["tokens_per_s"] is None and "OutOfMemoryError" in oom["error"]
    assert by_key[("prefill", "scripted", 32, 1)]["status"] == "ok"  # the length after the OOM still ran
    assert ("decode", "scripted", 48, 1) not in by_key  # nothing to decode from a prefill that failed
    assert [k for k in by_key if k[0] == "decode"] == [("decode", "scripted", 16, 1), ("decode", "scripted", 32, 1)]
    assert any("out of memory" in w for w in warnings)


def test_a_batch_that_does_not_fit_is_recorded_and_smaller_ones_are_kept(tmp_path):
    runner = ScriptedRunner(oom_batch=8)
    harness, store, _ = bench(tmp_path, Plan(lengths=[16], batch_sizes=[1, 8, 2], decode_steps=3, repeats=2))
    harness.run([subject(runner)])
    status = {(r["bench"], r["batch_size"]): r["status"] for r in store.bench()}
    assert status == {("prefill", 1): "ok", ("decode", 1): "ok", ("decode", 2): "ok", ("decode", 8): "oom"}
    assert runner.steps == DECODE_WARMUP_STEPS * 3 + 3 * 2  # warm-up, then per fitting batch: untimed + timed steps


def test_a_failure_that_is_not_memory_is_recorded_as_an_error(tmp_path):
    harness, store, warnings = bench(tmp_path, Plan(lengths=[16], batch_sizes=[1, 2], decode_steps=1, repeats=1))
    harness.run([subject(ScriptedRunner(broken_batch=2))])
    failed = [r for r in store.bench() if r["status"] != "ok"]
    assert [(r["bench"], r["batch_size"], r["status"]) for r in failed] == [("decode", 2, "error")]
    assert "ValueError: a bug" in failed[0]["error"] and any("failed" in w for w in warnings)


def test_records_carry_the_contract_fields(tmp_path):
    harness, store, _ = bench(tmp_path, Plan(lengths=[16], batch_sizes=[4], decode_steps=2, repeats=3))
    harness.run([subject(ScriptedRunner())])
    prefill, decode = store.bench()
    contract = {"bench", "model", "impl", "length", "batch_size", "tokens_per_s", "ttft_s", "peak_mem_gb", "status"}
    for record in (prefill, decode):
        assert contract <= record.keys()
        assert record["runner"] == "scripted" and record["device"] == "cpu" and record["dtype"] == "fp32"
    assert prefill["repeats"] == 3 and prefill["ttft_s"] == pytest.approx(sorted(prefill["times_s"])[1])
    assert prefill["tokens_per_s"] == pytest.approx(16 / prefill["ttft_s"])
    assert decode["ttft_s"] is None and decode["tokens_per_s"] == pytest.approx(4 / decode["step_s"])


def test_a_rerun_measures_only_what_is_missing(tmp_path):
    plan = Plan(lengths=[16, 32], batch_sizes=[1], decode_steps=1, repeats=1)
    harness, store, _ = bench(tmp_path, plan)
    harness.run([subject(ScriptedRunner(oom_from=32))])
    first = store.bench()
    path = tmp_path / "run" / "bench.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if '"decode"' not in line))
    runner = ScriptedRunner(oom_from=32)
    again, store, _ = bench(tmp_path, plan)
    written = again.run([subject(runner)])
    assert [(r["bench"], r["length"]) for r in written] == [("decode", 16)]  # the OOM at 32 is not retried
    assert runner.prefills == [16, 16]  # warm-up, then the prefill the decode needs (not recorded twice)
    assert len(store.bench()) == len(first)


def test_lengths_beyond_the_context_are_skipped_with_a_warning(tmp_path):
    harness, store, warnings = bench(tmp_path, Plan(lengths=[16, 64], batch_sizes=[], repeats=1))
    harness.run([subject(ScriptedRunner(), max_context=32)])
    assert [r["length"] for r in store.bench()] == [16]
    assert any("beyond its context" in w for w in warnings)


def test_a_spent_budget_starts_nothing_new(tmp_path):
    built = []
    harness, store, warnings = bench(tmp_path, Plan(lengths=[16], batch_sizes=[1], budget_s=1e-9))
    harness.run([Subject(**{**vars(subject(ScriptedRunner())), "build": lambda: built.append(1)})])
    assert store.bench() == [] and built == [] and harness.skipped == ["scripted (all lengths)"]
    assert any("budget" in w for w in warnings)


@pytest.mark.parametrize(("chunk", "lengths", "warmup"), [(8, [4, 32], 16), (8, [4, 12], 12), (None, [24, 64], 24)])
def test_the_warm_up_runs_two_chunks_of_a_chunked_prefill(tmp_path, chunk, lengths, warmup):
    runner = ScriptedRunner()
    runner.chunk_size = chunk
    harness, _, _ = bench(tmp_path, Plan(lengths=lengths, batch_sizes=[], repeats=1))
    harness.run([subject(runner)])
    assert runner.prefills == [warmup, *lengths]
