"""`mmx bench kernels`: lightning-attention kernels side by side on one GPU, as a table and a JSON file.

Ours (prefill, decode, backward, packed sequences), flash-linear-attention 0.6.0 when installed, torch SDPA causal
softmax attention, and our PyTorch path where it is not too slow. Each timing is also given as a fraction of the
HBM floor: the bytes the operation must move over the GPU's datasheet bandwidth (measured when the GPU is unknown).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mmx.commands.app import bench_app
from mmx.errors import MmxError
from mmx.sizes import format_size, parse_size, parse_sizes, sweep

_OUT = typer.Option(None, "--out", help="Write the results as JSON to this file.")


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


def _print_tables(console: Console, records: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    from mmx.workflows.bench.kernel_run import ms_of

    table = Table(title="lightning attention kernels (ms; % = share of the HBM floor reached; × = fla time / ours)")
    for col in ("op", "H", "T / B", "impl", "ms", "tokens/s", "% HBM", "×fla", "peak GB", "status"):
        table.add_column(col, justify="left" if col in ("op", "impl", "status") else "right")
    for r in records:
        fla = ms_of(records, r["op"], "fla", r["heads"], r["length"]) if r["impl"] == "mmx" else None
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
    from mmx.kernels.plan import HEAD_DIMS

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

    from mmx.workflows.bench.kernel_run import KernelPlan, run_kernel_bench

    plan = KernelPlan(sizes, head_list, head_dim, op_list, impl_list, bwd_max, decode_batch, tune, out)
    report = run_kernel_bench(plan, ["mmx", *sys.argv[1:]])
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
