"""`mmx bench kernels` as a workflow: measure our lightning-attention kernels beside the contestants on one GPU,
keep the records in a JSON file rewritten after each one, and judge them against the kernel targets."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mmx.kernels.plan import DEFAULT_CONFIG
from mmx.sizes import format_size
from mmx.workflows.bench.kernels import BWD_VARIANTS, DECODE_BLOCKS, FWD_VARIANTS, KernelBench
from mmx.workflows.bench.peaks import datasheet_peaks, device_name, measure_peaks
from mmx.workflows.provenance import git_commit, package_versions

# The kernels' targets: (op, what, threshold).
TARGETS = (
    ("prefill", "speed-up over fla at every T ≥ 256k (H=8)", 1.5),
    ("prefill", "fraction of the HBM floor at T = 4M (H=8)", 0.4),
    ("decode", "speed-up over fla, kernels replayed from a CUDA graph (B=64, H=8)", 3.0),
    ("decode", "speed-up over fla, one Python call per step (B=64, H=8)", 3.0),
    ("decode", "fraction of the HBM floor, graph replay (B=64, H=8)", 0.5),
    ("backward", "speed-up over fla at every 64k ≤ T ≤ 1M (H=8)", 1.2),
    ("packed", "packed throughput / one-sequence throughput", 0.9),
)


@dataclass(frozen=True)
class KernelPlan:
    """What to measure: lengths, head counts and head dim, which ops and contestants, and where to write."""

    lengths: Sequence[int]
    heads: Sequence[int]
    head_dim: int
    ops: Sequence[str]
    impls: Sequence[str]
    backward_max: int
    decode_batch: int
    tune: bool
    out: Path | None


class Report:
    """Collects records and rewrites the JSON file after each one, so a cut-short run still leaves its numbers."""

    def __init__(self, out: Path | None, meta: dict[str, Any], bandwidth: float | None) -> None:
        self.out = out
        self.meta = meta
        self.bandwidth = bandwidth
        self.records: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {"agreement": {}, "tuning": [], "targets": []}

    def add(self, result: Any) -> dict[str, Any]:
        record = result.record(self.bandwidth)
        self.records.append(record)
        _progress(record)
        self.save()
        return record

    def save(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps({**self.meta, **self.extra, "records": self.records}, indent=1) + "\n")
        tmp.replace(self.out)


def _progress(record: dict[str, Any]) -> None:
    ms = f"{record['ms']:.3f} ms" if record["ms"] is not None else record["status"]
    frac = f"  {record['hbm_fraction']:.0%} of HBM floor" if record["hbm_fraction"] else ""
    print(f"  {record['op']:<8} {record['impl']:<5} H={record['heads']:<3} T={format_size(record['length']):<5} "
          f"B={record['batch_size']:<3} {ms}{frac}", file=sys.stderr, flush=True)  # fmt: skip


def ms_of(records: list[dict[str, Any]], op: str, impl: str, heads: int, length: int) -> float | None:
    for r in records:
        if (r["op"], r["impl"], r["heads"], r["length"], r["status"]) == (op, impl, heads, length, "ok"):
            return r["ms"]
    return None


def evaluate_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target's measured value (the worst case over its lengths) and whether it is met; None if not measured."""

    def speedups(op: str, low: int, high: int) -> list[float]:
        out = []
        for r in records:
            if (r["op"], r["impl"], r["heads"], r["status"]) == (op, "mmx", 8, "ok") and low <= r["length"] <= high:
                fla = ms_of(records, op, "fla", 8, r["length"])
                if fla is not None:
                    out.append(fla / r["ms"])
        return out

    def fraction(op: str, length: int | None) -> float | None:
        for r in records:
            if (r["op"], r["impl"], r["heads"], r["status"]) == (op, "mmx", 8, "ok") and length in (None, r["length"]):
                return r["hbm_fraction"]
        return None

    packed = [r for r in records if r["op"] == "packed" and r["status"] == "ok"]
    values: list[float | None] = [
        min(speedups("prefill", 2**18, 2**40), default=None),
        fraction("prefill", 2**22),
        min(speedups("decode", 1, 1), default=None),
        min(speedups("decode_eager", 1, 1), default=None),
        fraction("decode", None),
        min(speedups("backward", 2**16, 2**20), default=None),
        packed[1]["ms"] / packed[0]["ms"] if len(packed) == 2 else None,
    ]
    return [
        {
            "op": op,
            "target": what,
            "threshold": threshold,
            "value": value,
            "met": None if value is None else value >= threshold,
        }  # fmt: skip
        for (op, what, threshold), value in zip(TARGETS, values, strict=True)
    ]


def run_kernel_bench(plan: KernelPlan, command: list[str]) -> Report:
    """Measure everything `plan` asks for on the current CUDA device; the report's JSON is rewritten as it goes."""
    device = torch.device("cuda", torch.cuda.current_device())
    name = device_name(device)
    measured = measure_peaks(device, torch.bfloat16)
    sheet = datasheet_peaks(name)
    bandwidth = (sheet[1] if sheet else measured.bandwidth_tbs) * 1e12
    meta = {
        "device": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command,
        "versions": package_versions(),
        "bandwidth": {
            "floor_basis_tbs": bandwidth / 1e12,
            "basis": "datasheet" if sheet else "measured copy",
            "measured_copy_tbs": measured.bandwidth_tbs,
            "measured_bf16_matmul_tflops": measured.matmul_tflops,
        },
        "config": dataclasses.asdict(DEFAULT_CONFIG),
        "dtype": "bfloat16",
        "head_dim": plan.head_dim,
    }
    report = Report(plan.out, meta, bandwidth)
    bench = KernelBench(device)
    print(f"{name}: floor at {bandwidth / 1e12:.2f} TB/s ({meta['bandwidth']['basis']}); "
          f"measured copy {measured.bandwidth_tbs:.2f} TB/s; fla {'found' if bench.has_fla else 'not installed'}",
          file=sys.stderr, flush=True)  # fmt: skip
    if "prefill" in plan.ops:
        for n_heads in plan.heads:
            _length_sweep(bench, report, plan, "prefill", n_heads, plan.lengths)
        report.extra["agreement"] = {"length": 16384, "heads": 8, **bench.agreement(16384, 8, plan.head_dim)}
    if "decode" in plan.ops:
        for result in bench.decode(plan.decode_batch, 8, plan.head_dim, plan.impls):
            report.add(result)
    if "backward" in plan.ops:
        _length_sweep(bench, report, plan, "backward", 8, [n for n in plan.lengths if n <= plan.backward_max])
    if plan.tune:
        _tune(bench, report, plan)
    if "packed" in plan.ops and max(plan.lengths) >= 2**16:
        n_docs = max(plan.lengths) // 2**16
        for result in bench.packed(n_docs, 2**16, 8, plan.head_dim):
            report.add(result)
    report.extra["targets"] = evaluate_targets(report.records)
    report.save()
    return report


def _length_sweep(
    bench: KernelBench, report: Report, plan: KernelPlan, op: str, n_heads: int, lengths: Sequence[int]
) -> None:
    """Time `op` at each length; a contestant that runs out of memory sits out every longer length."""
    live = tuple(plan.impls)
    for length in lengths:
        source = bench.prefill if op == "prefill" else bench.backward
        for result in source(length, n_heads, plan.head_dim, live):
            report.add(result)
            if result.status == "oom":
                live = tuple(i for i in live if i != result.impl)
        if not live:
            return


def _tune(bench: KernelBench, report: Report, plan: KernelPlan) -> None:
    """Block-size variants of our kernels, and where the forward's time goes at 1M."""
    report.extra["breakdown"] = [bench.breakdown(2**20, 8, plan.head_dim)]
    report.save()
    for length in (2**18, 2**20):
        report.extra["tuning"] += bench.tune("prefill", length, 8, plan.head_dim, FWD_VARIANTS)
        report.save()
    report.extra["tuning"] += bench.tune("backward", 2**18, 8, plan.head_dim, BWD_VARIANTS)
    report.extra["tuning"] += bench.tune_decode(plan.decode_batch, 8, plan.head_dim, DECODE_BLOCKS)
    report.save()
