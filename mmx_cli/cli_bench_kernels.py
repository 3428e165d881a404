"""`mmx bench kernels`: lightning-attention kernels side by side on one GPU, as a table and a JSON file.

Ours (prefill, decode, backward, packed sequences), flash-linear-attention 0.6.0 when installed, torch SDPA causal
softmax attention, and our PyTorch path where it is not too slow. Each timing is also given as a fraction of the
HBM floor: the bytes the operation must move over the GPU's datasheet bandwidth (measured when the GPU is unknown).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mmx.errors import MmxError
from mmx.groups import bench_app
from mmx.sizes import format_size, parse_size, parse_sizes, sweep

_OUT = typer.Option(None, "--out", help="Write the results as JSON to this file.")
# Target ratios from the kernels issue: (op, what, threshold).
TARGETS = (
    ("prefill", "speed-up over fla at every T ≥ 256k (H=8)", 1.5),
    ("prefill", "fraction of the HBM floor at T = 4M (H=8)", 0.4),
    ("decode", "speed-up over fla, kernels replayed from a CUDA graph (B=64, H=8)", 3.0),
    ("decode", "speed-up over fla, one Python call per step (B=64, H=8)", 3.0),
    ("decode", "fraction of the HBM floor, graph replay (B=64, H=8)", 0.5),
    ("backward", "speed-up over fla at every 64k ≤ T ≤ 1M (H=8)", 1.2),
    ("packed", "packed throughput / one-sequence throughput", 0.9),
)


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    picked = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in picked if p not in allowed]
    if not picked or bad:
        raise MmxError(f"bad {flag} {text!r}", f"use a comma list of {', '.join(allowed)}")
    return picked


def _positive_ints(text: str, flag: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise MmxError(f"bad {flag} {text!r}", "give positive integers, e.g. 8,64")
    return sorted({int(p) for p in parts})


def _commit() -> str | None:
    from mmx.runner import git_commit

    return git_commit() or os.environ.get("MMX_GIT_COMMIT")


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


def _ms(records: list[dict[str, Any]], op: str, impl: str, heads: int, length: int) -> float | None:
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
                fla = _ms(records, op, "fla", 8, r["length"])
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


def _print_tables(console: Console, records: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    table = Table(title="lightning attention kernels (ms; % = share of the HBM floor reached; × = fla time / ours)")
    for col in ("op", "H", "T / B", "impl", "ms", "tokens/s", "% HBM", "×fla", "peak GB", "status"):
        table.add_column(col, justify="left" if col in ("op", "impl", "status") else "right")
    for r in records:
        fla = _ms(records, r["op"], "fla", r["heads"], r["length"]) if r["impl"] == "mmx" else None
        size = f"B={r['batch_size']}" if r["op"] == "decode" else format_size(r["length"])
        table.add_row(
            r["op"], str(r["heads"]), size, r["impl"] + (" (packed)" if "cu_seqlens" in r["note"] else ""),
            f"{r['ms']:.3f}" if r["ms"] is not None else "-",
            f"{r['tokens_per_s']:.3g}" if r["tokens_per_s"] else "-",
            f"{r['hbm_fraction']:.0%}" if r["hbm_fraction"] else "-",
            f"{fla / r['ms']:.2f}" if fla and r["ms"] else "-",
            f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-",
            r["status"],
        )  # fmt: skip
    console.print(table)
    goals = Table(title="targets")
    for col in ("op", "target", "needs", "measured", "met"):
        goals.add_column(col)
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        goals.add_row(t["op"], t["target"], f"≥ {t['threshold']}", value, met)
    console.print(goals)


@bench_app.command("kernels")
def bench_kernels(
    lengths: str | None = typer.Option(None, "--lengths", help="Comma list of sequence lengths, e.g. 4k,64k,1m."),
    max_len: str | None = typer.Option(None, "--max-len", help="Sweep the powers of two from 4k to this [4m]."),
    heads: str = typer.Option("8,64", "--heads", help="Comma list of head counts (H=64 runs until memory runs out)."),
    head_dim: int = typer.Option(128, "--head-dim", help="Head dimension (16, 32, 64 or 128)."),
    ops: str = typer.Option("prefill,decode,backward,packed", "--ops", help="Which measurements to run."),
    impls: str = typer.Option("mmx,fla,sdpa,torch", "--impls", help="Contestants (fla is skipped if absent)."),
    backward_max_len: str = typer.Option("1m", "--backward-max-len", help="Longest backward measured."),
    decode_batch: int = typer.Option(64, "--decode-batch", help="Sequences in the decode step."),
    tune: bool = typer.Option(False, "--tune", help="Also time block-size variants of our kernels."),
    out: Path | None = _OUT,
) -> None:
    """Time our lightning-attention kernels against flash-linear-attention, SDPA and the PyTorch path."""
    import torch

    from mmx.kernels.dispatch import triton_available
    from mmx.kernels.plan import DEFAULT_CONFIG, HEAD_DIMS

    if head_dim not in HEAD_DIMS:
        raise MmxError(f"bad --head-dim {head_dim}", f"use one of {', '.join(map(str, HEAD_DIMS))}")
    if lengths is not None and max_len is not None:
        raise MmxError("--lengths and --max-len both given", "use one of them")
    sizes = parse_sizes(lengths) if lengths is not None else sweep(parse_size(max_len or "4m"))
    op_list = _choices(ops, ("prefill", "decode", "backward", "packed"), "--ops")
    impl_list = _choices(impls, ("mmx", "fla", "sdpa", "torch"), "--impls")
    head_list = _positive_ints(heads, "--heads")
    bwd_max = parse_size(backward_max_len)
    if decode_batch < 1:
        raise MmxError(f"bad --decode-batch {decode_batch}", "use 1 or more")
    if not torch.cuda.is_available():
        raise MmxError("mmx bench kernels needs a CUDA GPU", "run it on a machine with an NVIDIA GPU (see mmx info)")
    if not triton_available():
        raise MmxError("triton is not installed", "pip install 'mmx[triton]'")

    from mmx.cli_info import package_versions
    from mmx.kernels.bench import BWD_VARIANTS, DECODE_BLOCKS, FWD_VARIANTS, KernelBench
    from mmx.throughput_peaks import datasheet_peaks, device_name, measure_peaks

    device = torch.device("cuda", torch.cuda.current_device())
    name = device_name(device)
    measured = measure_peaks(device, torch.bfloat16)
    sheet = datasheet_peaks(name)
    bandwidth = (sheet[1] if sheet else measured.bandwidth_tbs) * 1e12
    meta = {
        "device": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _commit(),
        "command": ["mmx", *sys.argv[1:]],
        "versions": package_versions(),
        "bandwidth": {
            "floor_basis_tbs": bandwidth / 1e12,
            "basis": "datasheet" if sheet else "measured copy",
            "measured_copy_tbs": measured.bandwidth_tbs,
            "measured_bf16_matmul_tflops": measured.matmul_tflops,
        },
        "config": dataclasses.asdict(DEFAULT_CONFIG),
        "dtype": "bfloat16",
        "head_dim": head_dim,
    }
    report = Report(out, meta, bandwidth)
    bench = KernelBench(device)
    print(f"{name}: floor at {bandwidth / 1e12:.2f} TB/s ({meta['bandwidth']['basis']}); "
          f"measured copy {measured.bandwidth_tbs:.2f} TB/s; fla {'found' if bench.has_fla else 'not installed'}",
          file=sys.stderr, flush=True)  # fmt: skip

    def run_sweep(op: str, n_heads: int, lens: list[int]) -> None:
        live = impl_list
        for length in lens:
            source = bench.prefill if op == "prefill" else bench.backward
            for result in source(length, n_heads, head_dim, live):
                report.add(result)
                if result.status == "oom":
                    live = tuple(i for i in live if i != result.impl)
            if not live:
                return

    if "prefill" in op_list:
        for n_heads in head_list:
            run_sweep("prefill", n_heads, sizes)
        report.extra["agreement"] = {"length": 16384, "heads": 8, **bench.agreement(16384, 8, head_dim)}
    if "decode" in op_list:
        for result in bench.decode(decode_batch, 8, head_dim, impl_list):
            report.add(result)
    if "backward" in op_list:
        run_sweep("backward", 8, [n for n in sizes if n <= bwd_max])
    if tune:
        report.extra["breakdown"] = [bench.breakdown(2**20, 8, head_dim)]
        report.save()
        for length in (2**18, 2**20):
            report.extra["tuning"] += bench.tune("prefill", length, 8, head_dim, FWD_VARIANTS)
            report.save()
        report.extra["tuning"] += bench.tune("backward", 2**18, 8, head_dim, BWD_VARIANTS)
        report.extra["tuning"] += bench.tune_decode(decode_batch, 8, head_dim, DECODE_BLOCKS)
        report.save()
    if "packed" in op_list and max(sizes) >= 2**16:
        n_docs = max(sizes) // 2**16
        for result in bench.packed(n_docs, 2**16, 8, head_dim):
            report.add(result)
    report.extra["targets"] = evaluate_targets(report.records)
    report.save()
    _print_tables(Console(), report.records, report.extra["targets"])
    for part in report.extra.get("breakdown", []):
        print(f"breakdown T={format_size(part['length'])} H={part['heads']} segment={part['segment']}:")
        for name, stats in part.items():
            if isinstance(stats, dict):
                print(f"  {name:<17} " + " ".join(f"{key}={value}" for key, value in stats.items()))
    for row in report.extra["tuning"]:
        ms = "-" if row["ms"] is None else f"{row['ms']:.3f}"
        print(f"tune {row['op']:<8} T={format_size(row.get('length', 1)):<5} {json.dumps(row['changes']):<44} "
              f"{ms} {row['status']} {row['note'][:80]}")  # fmt: skip
