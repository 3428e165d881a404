"""The throughput harness: prefill and decode timings per subject and length, appended to a run store as they finish.

For each subject (built only when its turn comes): one warm-up prefill and decode, then for each context length a
prefill of random token ids — time to first token, tokens/s, peak memory, MFU — and, from the cache it left, decode
steps at each batch size (the one-row cache copied into B rows, two untimed steps, then `decode_steps` timed ones).
Every timing is bracketed by device synchronisation. A run that runs out of memory is recorded with status "oom"
and the sweep goes on; a measurement already on disk (a resumed run) is not repeated.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from mmx.model.backends.common import dtype_name
from mmx.model.config import MiniMaxConfig
from mmx.model.memory import is_out_of_memory
from mmx.results.store import RunStore
from mmx.sizes import format_size
from mmx.workflows.bench.cost import decode_bytes, prefill_flops
from mmx.workflows.bench.job import BenchJob
from mmx.workflows.bench.peaks import DevicePeaks
from mmx.workflows.bench.subjects import Runner, Subject

OK, OOM, ERROR = "ok", "oom", "error"
LONG_RUN_S = 2.0  # a prefill slower than this is timed once: its run-to-run spread is far below a percent
WARMUP_TOKENS = 8192  # warm-up prompt of a model that prefills in one forward (the first length, if shorter)
DECODE_WARMUP_STEPS = 2  # untimed steps after copying a cache into B rows (kernels specialise on the batch size)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What to measure for every subject."""

    lengths: Sequence[int]
    batch_sizes: Sequence[int]  # decode batch sizes; empty or decode_steps = 0 measures prefill only
    decode_steps: int = 16
    repeats: int = 3
    seed: int = 0
    budget_s: float | None = None  # stop starting new measurements after this many seconds

    def params(self) -> dict[str, Any]:
        return {
            "lengths": list(self.lengths),
            "batch_sizes": list(self.batch_sizes),
            "decode_steps": self.decode_steps,
            "repeats": self.repeats,
            "seed": self.seed,
        }


def measure_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a measurement within a run."""
    return (record.get("bench"), record.get("impl"), record.get("length"), record.get("batch_size"))


def release_memory() -> None:
    """Drop what the last measurement left so the next one starts clean (after an OOM especially)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Meter:
    """Wall-clock timing with device syncs (and, in a torchrun job, barriers: the span covers every rank), and peak
    allocated device memory (None on the CPU)."""

    def __init__(self, device: torch.device, job: BenchJob | None = None) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.job = job

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 1e9 if self.cuda else None

    def _together(self) -> None:
        if self.job is not None:
            self.job.together(self.device)
            self.sync()

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        self._together()
        start = time.perf_counter()
        result = fn()
        self.sync()
        self._together()
        seconds = time.perf_counter() - start
        return (self.job.agree(seconds) if self.job is not None else seconds), result


class ThroughputBench:
    """Runs a Plan over subjects into a RunStore; `log` gets one line per measurement, `warn` every failure."""

    def __init__(
        self,
        plan: Plan,
        store: RunStore,
        device: torch.device,
        peaks: DevicePeaks,
        dtype: torch.dtype,
        log: Log = lambda _: None,
        warn: Log = lambda _: None,
        job: BenchJob | None = None,
        planner: Callable[[MiniMaxConfig, int, int], Any] | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.job = job  # a torchrun job: rank 0 decides and records, every rank measures
        self.replicas, self.devices = (job.replicas, job.world) if job is not None else (1, 1)
        self.meter = _Meter(device, job)
        self.planner = planner  # memory plan of our models: recorded beside each measured peak
        self.device = device
        self.peaks = peaks
        self.dtype_name = dtype_name(dtype)
        self.elem_bytes = torch.finfo(dtype).bits // 8
        self.log = log
        self.warn = warn
        self.records: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self._done = {measure_key(r): r["status"] for r in store.bench() if r.get("status") in (OK, OOM)}
        self._start = time.monotonic()

    @property
    def decodes(self) -> list[int]:
        return list(self.plan.batch_sizes) if self.plan.decode_steps > 0 else []

    def run(self, subjects: Sequence[Subject]) -> list[dict[str, Any]]:
        """Measure every subject in turn; returns the records written by this call."""
        for subject in subjects:
            lengths = self._lengths(subject)
            if not any(self._todo(subject, n) for n in lengths):
                continue
            if self._over_budget(f"{subject.label} (all lengths)"):
                continue
            runner = self._build(subject)
            if runner is None:
                continue
            try:
                self._warm_up(subject, runner, _warmup_tokens(runner, lengths))
                for length in lengths:
                    if self._todo(subject, length) and not self._over_budget(f"{subject.label} {format_size(length)}"):
                        self._measure_length(subject, runner, length)
            finally:
                del runner
                release_memory()
        return self.records

    def _build(self, subject: Subject) -> Runner | None:
        """Load the subject's model; one that does not fit in memory is reported and skipped."""
        failed = None
        try:
            return subject.build()
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            failed = f"{subject.label}: the model does not fit in memory ({str(err).strip().splitlines()[0][:200]})"
        release_memory()
        self.warn(f"{failed}; skipped")
        return None

    # -------------------------------------------------------------------------------------------- bookkeeping

    def _lengths(self, subject: Subject) -> list[int]:
        fits = [n for n in self.plan.lengths if subject.max_context is None or n <= subject.max_context]
        for n in self.plan.lengths:
            if n not in fits:
                self.warn(f"{subject.label}: {format_size(n)} is beyond its context of {subject.max_context}; skipped")
        return fits

    def _keys(self, subject: Subject, length: int) -> list[tuple[Any, ...]]:
        return [("prefill", subject.label, length, 1)] + [("decode", subject.label, length, b) for b in self.decodes]

    def _todo(self, subject: Subject, length: int) -> bool:
        """Whether anything at `length` is missing; nothing is when its prefill already ran out of memory."""
        if self._done.get(("prefill", subject.label, length, 1)) == OOM:
            return False
        return any(key not in self._done for key in self._keys(subject, length))

    def _over_budget(self, what: str) -> bool:
        budget = self.plan.budget_s
        within = budget is None or time.monotonic() - self._start < budget
        if self.job is not None:
            within = self.job.agree(within)
        if within:
            return False
        self.skipped.append(what)
        self.warn(f"time budget of {budget:g}s spent: skipping {what}")
        return True

    def _append(self, record: dict[str, Any]) -> None:
        self.store.append_bench(record)
        self.records.append(record)
        self._done[measure_key(record)] = record["status"]

    def _base(self, subject: Subject, runner: Runner, bench: str, length: int, batch: int) -> dict[str, Any]:
        return {
            "bench": bench,
            "model": subject.info.get("name", subject.label),
            "impl": subject.label,
            "arch": subject.arch,
            "length": length,
            "batch_size": batch,
            "device": self.peaks.device,
            "dtype": self.dtype_name,
            **runner.details,
        }

    def _failure(self, base: dict[str, Any], err: BaseException) -> dict[str, Any]:
        status = OOM if is_out_of_memory(err) else ERROR
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        what = f"{base['bench']} {base['impl']} {format_size(base['length'])} ×{base['batch_size']}"
        self.warn(f"{what}: {'out of memory' if status == OOM else 'failed'} ({first_line[:200]})")
        return {
            **base,
            "tokens_per_s": None,
            "ttft_s": None,
            "peak_mem_gb": self.meter.peak_gb(),
            "status": status,
            "error": f"{type(err).__name__}: {first_line}",
        }

    # ----------------------------------------------------------------------------------------------- timing

    def _ids(self, shape: tuple[int, ...], vocab: int, salt: int) -> torch.Tensor:
        """Random token ids (never a constant: zeros can run faster than real data)."""
        generator = torch.Generator(device=self.device).manual_seed(self.plan.seed * 1_000_003 + salt)
        return torch.randint(0, vocab, shape, device=self.device, generator=generator)

    def _warm_up(self, subject: Subject, runner: Runner, length: int) -> None:
        """Compile and autotune kernels, create library handles: one short prefill and a few decode steps."""
        cache = rows = None
        try:
            cache = runner.prefill(self._ids((1, length), subject.vocab_size, 0))
            batch = min(self.decodes, default=0)
            if batch:
                rows = runner.expand(cache, batch, DECODE_WARMUP_STEPS)
                tokens = self._ids((batch,), subject.vocab_size, 1)
                for _ in range(DECODE_WARMUP_STEPS):
                    tokens = runner.decode(tokens, rows)
            self.meter.sync()
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            self.warn(f"{subject.label}: warm-up at {format_size(length)} ran out of memory; timing cold")
        cache = rows = None
        release_memory()

    def _measure_length(self, subject: Subject, runner: Runner, length: int) -> None:
        cache = self._prefill(subject, runner, length)
        if cache is None:
            return
        for batch in self.decodes:
            if ("decode", subject.label, length, batch) not in self._done:
                self._decode(subject, runner, cache, length, batch)

    def _prefill(self, subject: Subject, runner: Runner, length: int) -> Any:
        """Time the prefill (recorded unless already on disk) and return its cache, or None when it failed."""
        key = ("prefill", subject.label, length, 1)
        base = self._base(subject, runner, "prefill", length, 1)
        ids = self._ids((1, length), subject.vocab_size, length)
        times: list[float] = []
        peak: float | None = None
        cache = failure = None
        try:
            for _ in range(max(1, self.plan.repeats)):
                cache = None  # the previous run's cache is freed before the next one is timed
                self.meter.reset_peak()
                seconds, cache = self.meter.time(partial(runner.prefill, ids))
                times.append(seconds)
                peak = _max(peak, self.meter.peak_gb())
                if seconds > LONG_RUN_S:
                    break
        except Exception as err:
            failure = self._failure(base, err)
        if failure is not None:  # released outside the handler: the traceback's frames still held the tensors
            cache = None
            release_memory()
            if key not in self._done:
                self._append(failure)
            return None
        if key in self._done:
            return cache
        ttft = statistics.median(times)
        peak = self._job_peak(base, peak)
        rate = self.replicas * length / ttft  # every replica prefilled its own copy in that time
        record = {**base, "tokens_per_s": rate, "ttft_s": ttft, "peak_mem_gb": peak, "status": OK}
        record |= {"times_s": times, "repeats": len(times), **self._planned(subject, length, 1)}
        if subject.config is not None:
            flops = self.replicas * prefill_flops(subject.config, length)
            tflops = flops / ttft / 1e12
            record |= {"flops": flops, "tflops": tflops, "mfu": _ratio(tflops, self._all(self.peaks.matmul_tflops))}
        self._append(record)
        mfu = f", MFU {record['mfu']:.0%}" if record.get("mfu") is not None else ""
        self.log(
            f"prefill {subject.label} {format_size(length)}: {rate:,.0f} tok/s, TTFT {ttft:.3f}s, peak {_gb(peak)}{mfu}"
        )
        return cache

    def _decode(self, subject: Subject, runner: Runner, cache: Any, length: int, batch: int) -> None:
        """Copy the prompt's cache into `batch` rows and time `decode_steps` greedy steps."""
        base = self._base(subject, runner, "decode", length, batch)
        steps = self.plan.decode_steps
        rows = failure = None
        try:
            self.meter.reset_peak()
            rows = runner.expand(cache, batch, DECODE_WARMUP_STEPS + steps)
            tokens = self._ids((batch,), subject.vocab_size, length + batch)
            for _ in range(DECODE_WARMUP_STEPS):
                tokens = runner.decode(tokens, rows)
            seconds, _ = self.meter.time(partial(_steps, runner, tokens, rows, steps))
            peak = self._job_peak(base, self.meter.peak_gb())
        except Exception as err:
            failure = self._failure(base, err)
        rows = None
        if failure is not None:
            release_memory()
            self._append(failure)
            return
        step = seconds / steps
        rate = self.replicas * batch / step
        record = {**base, "tokens_per_s": rate, "ttft_s": None, "peak_mem_gb": peak, "status": OK}
        record |= {"step_s": step, "steps": steps, **self._planned(subject, length, 1 + batch)}
        if subject.config is not None:
            context = length + DECODE_WARMUP_STEPS + steps // 2  # the mean context of the timed steps
            experts = 1 if base.get("quantized_experts") else self.elem_bytes
            moved = self.replicas * decode_bytes(subject.config, context, batch, self.elem_bytes, experts)
            bandwidth = moved / step
            record |= {"bytes_per_step": moved, "bandwidth_gbs": bandwidth / 1e9}
            record["bandwidth_util"] = _ratio(bandwidth / 1e12, self._all(self.peaks.bandwidth_tbs))
        self._append(record)
        util = f", {record['bandwidth_util']:.0%} of peak bandwidth" if record.get("bandwidth_util") else ""
        self.log(
            f"decode  {subject.label} {format_size(length)} ×{batch}: {rate:,.0f} tok/s, "
            f"{step * 1e3:.2f} ms/step, peak {_gb(peak)}{util}"
        )

    def _planned(self, subject: Subject, length: int, rows: int) -> dict[str, float]:
        """The peak torch's allocator should see by the memory plan (NCCL's buffers are outside it), for our models."""
        if self.planner is None or subject.config is None or subject.info.get("backend") != "native":
            return {}
        plan = self.planner(subject.config, length, rows)
        return {"planned_peak_gb": (plan.total - plan.comm_reserve) / 1e9}

    def _all(self, ceiling: float | None) -> float | None:
        """A per-device ceiling times the devices of the job."""
        return ceiling * self.devices if ceiling is not None else None

    def _job_peak(self, base: dict[str, Any], peak: float | None) -> float | None:
        """In a job: every rank's peak into `base`, and the largest as the record's peak."""
        if self.job is None:
            return peak
        per_rank = self.job.gather(peak)
        base["peak_mem_gb_per_rank"] = per_rank
        return max((p for p in per_rank if p is not None), default=None)


def _warmup_tokens(runner: Runner, lengths: Sequence[int]) -> int:
    """Two chunks for a chunked prefill, so the first chunk's kernels and those that carry a state in both compile
    (no more than the longest length needs); otherwise a short prompt."""
    if runner.chunk_size:
        return min(2 * runner.chunk_size, max(lengths))
    return min(lengths[0], WARMUP_TOKENS)


def _steps(runner: Runner, tokens: torch.Tensor, cache: Any, steps: int) -> torch.Tensor:
    for _ in range(steps):
        tokens = runner.decode(tokens, cache)
    return tokens


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _ratio(value: float, peak: float | None) -> float | None:
    return value / peak if peak else None


def _gb(value: float | None) -> str:
    return f"{value:.2f} GB" if value is not None else "n/a (CPU)"
