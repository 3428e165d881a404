"""`mmx bench throughput`: prefill and decode speed and peak memory against context length, into a bench run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from mmx.commands.app import bench_app
from mmx.errors import MmxError
from mmx.sizes import format_size, parse_size, resolve_lengths

if TYPE_CHECKING:  # heavy (torch) imports stay inside the command, so `mmx --help` is quick
    from mmx.workflows.bench.peaks import DevicePeaks

DEFAULT_MODEL = "mmx-mini"
DEFAULT_MAX_LEN = {"cuda": "1m", "cpu": "16k"}  # a CPU sweep to 1M tokens would take hours
PEAK_SOURCES = ("datasheet", "measure")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _positive(value: int | float | None, flag: str, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise MmxError(f"bad {flag} {value}", f"use {flag} {minimum} or more")


def parse_chunk_size(text: str) -> int | None:
    """`auto` -> None (sized per model); otherwise a positive token count (k/m suffixes allowed)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return parse_size(text)
    except MmxError:
        raise MmxError(f"bad --chunk-size {text!r}", "use auto or a positive size, e.g. 4096 or 16k") from None


def parse_batch_sizes(text: str) -> list[int]:
    """`1,8,64` -> [1, 8, 64]; empty means no decode measurements."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise MmxError(f"bad batch size {part!r} in --batch-sizes", "give positive integers, e.g. 1,8,64")
        sizes.append(int(part))
    return sorted(set(sizes))


def parse_archs(text: str) -> list[str]:
    """`hybrid`, a comma list, or `all` -> architectures in the order given."""
    from mmx.workflows.bench.subjects import ARCHS

    names = list(ARCHS) if text.strip().lower() == "all" else [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in ARCHS]
    if not names or unknown:
        raise MmxError(
            f"unknown architecture {(unknown or [text])[0]!r}", f"use all or a comma list of {', '.join(ARCHS)}"
        )
    return list(dict.fromkeys(names))


def parse_prefill_paths(text: str | None) -> list[str]:
    """`--prefill-attention`: a comma list of chunked-prefill attention paths; none given means the default one."""
    from mmx.model.chunk_attention import DEFAULT_PREFILL_PATH, PREFILL_PATHS

    if text is None:
        return [DEFAULT_PREFILL_PATH]
    names = list(PREFILL_PATHS) if text.strip().lower() == "all" else [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PREFILL_PATHS]
    if not names or unknown:
        raise MmxError(
            f"unknown --prefill-attention {(unknown or [text])[0]!r}",
            f"use all or a comma list of {', '.join(PREFILL_PATHS)}",
        )
    return list(dict.fromkeys(names))


def summary_table(title: str, records: list[dict[str, Any]]) -> Table:
    """One row per measurement: throughput, TTFT, peak memory, and MFU (prefill) or bandwidth use (decode)."""
    table = Table(title=title)
    for name in ("bench", "series", "length", "batch"):
        table.add_column(name)
    for name in ("tokens/s", "TTFT (s)", "peak GB", "MFU / BW", "status"):
        table.add_column(name, justify="right")
    for r in records:
        ok = r["status"] == "ok"
        util = r.get("mfu") if r["bench"] == "prefill" else r.get("bandwidth_util")
        table.add_row(
            r["bench"],
            r["impl"],
            format_size(r["length"]),
            str(r["batch_size"]),
            f"{r['tokens_per_s']:,.0f}" if ok else "–",
            f"{r['ttft_s']:.3f}" if ok and r.get("ttft_s") is not None else "–",
            f"{r['peak_mem_gb']:.2f}" if r.get("peak_mem_gb") is not None else "–",
            f"{util:.0%}" if ok and util is not None else "–",
            r["status"].upper() if not ok else "ok",
        )
    return table


def _command(args: list[tuple[str, Any]]) -> list[str]:
    """The canonical argv of this run (resolved lengths and --out), which resumes it when run again."""
    argv = ["mmx", "bench", "throughput"]
    for flag, value in args:
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


_OUT = typer.Option(None, "--out", help="Run directory; rerun with the same --out to resume (default: runs/bench-…).")


@bench_app.command()
def throughput(
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", help="Model spec: mmx-mini, mmx:PATH, random:PRESET[:SEED], hf:…"
    ),
    max_len: str | None = typer.Option(
        None, "--max-len", help="Sweep powers of two from 4k up to this size (default: 1m on CUDA, 16k on CPU)."
    ),
    lengths: str | None = typer.Option(None, "--lengths", help="Exact context lengths instead, e.g. 16k,256k,1m."),
    batch_sizes: str = typer.Option("1,8,64", "--batch-sizes", help="Decode batch sizes, a comma list."),
    decode_steps: int = typer.Option(16, "--decode-steps", help="Timed decode steps per cell; 0: prefill only."),
    repeats: int = typer.Option(3, "--repeats", help="Timed prefills per length (one when a run takes over 2 s)."),
    chunk_size: str = typer.Option(
        "auto", "--chunk-size", help="Prefill chunk of mmx models: tokens, or auto (sized to ~2 GiB of activations)."
    ),
    layers: int | None = typer.Option(None, "--layers", help="Keep N layers of a random: preset (a slice)."),
    arch: str = typer.Option("hybrid", "--arch", help="hybrid, softmax, lightning, a comma list, or all."),
    compare_transformers: bool = typer.Option(
        False, "--compare-transformers", help="Also time transformers' MiniMaxForCausalLM on the same config."
    ),
    prefill_attention: str | None = typer.Option(
        None,
        "--prefill-attention",
        help="Softmax attention of prefill chunks behind the cache in mmx models: split (cached keys unmasked + the "
        "chunk's causal square, merged exactly; the default), masked (one SDPA call, lower-right causal mask), "
        "or a comma list / all to compare them (one series each).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32."),
    tp: int = typer.Option(1, "--tp", help="Tensor parallel over N ranks (mmx models): torchrun or --devices."),
    quantize_experts: str = typer.Option("none", "--quantize-experts", help="mmx models: experts in fp8 or int8."),
    devices: str | None = typer.Option(
        None,
        "--devices",
        help="One rank per device, e.g. 0,1,2,3 or cpu,cpu (torchrun started for you), measured together: one "
        "model across them with --tp, else a copy on each (tokens/s count them all).",
    ),
    peaks: str = typer.Option("datasheet", "--peaks", help="MFU/bandwidth ceilings: datasheet or measure."),
    budget: float | None = typer.Option(None, "--budget", help="Seconds; start no new measurement after this."),
    out: Path | None = _OUT,
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights' draw order and of the token ids."),
    json_output: bool = typer.Option(False, "--json", help="Print the records as JSON instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-measurement lines (warnings still print)."),
) -> None:
    """Prefill tokens/s and time to first token against context length, decode tokens/s at batch sizes, peak memory."""
    from mmx.model.backends.common import resolve_device, resolve_dtype
    from mmx.model.parallel.quant import check_kind
    from mmx.model.parallel.runtime import join
    from mmx.results.rundir import check_out_dir, default_out
    from mmx.workflows.bench.peaks import detect_peaks
    from mmx.workflows.bench.subjects import Placement
    from mmx.workflows.bench.throughput import Plan

    for value, flag, minimum in ((repeats, "--repeats", 1), (layers, "--layers", 1), (tp, "--tp", 1)):
        _positive(value, flag, minimum)
    quantize = check_kind(quantize_experts)
    chunk = parse_chunk_size(chunk_size)
    _positive(decode_steps, "--decode-steps", 0)
    if budget is not None and budget <= 0:
        raise MmxError(f"bad --budget {budget:g}", "give a positive number of seconds")
    if peaks not in PEAK_SOURCES:
        raise MmxError(f"unknown --peaks {peaks!r}", f"use {' or '.join(PEAK_SOURCES)}")
    archs = parse_archs(arch)
    paths = parse_prefill_paths(prefill_attention)
    decode_batches = parse_batch_sizes(batch_sizes)
    out = out or default_out("bench", model)
    kind = device_kind(device, devices)
    sizes = resolve_lengths(max_len, lengths, DEFAULT_MAX_LEN[kind])
    command = _command(
        [
            ("--model", model),
            ("--lengths", ",".join(format_size(n) for n in sizes)),
            ("--batch-sizes", ",".join(map(str, decode_batches)) or None),
            ("--decode-steps", decode_steps),
            ("--repeats", repeats),
            ("--chunk-size", chunk_size),
            ("--layers", layers),
            ("--arch", ",".join(archs)),
            ("--compare-transformers", compare_transformers),
            ("--prefill-attention", ",".join(paths)),
            ("--device", device),
            ("--dtype", dtype),
            ("--tp", tp if tp > 1 else None),
            ("--quantize-experts", quantize),
            ("--peaks", peaks),
            ("--budget", budget),
            ("--out", out),
            ("--seed", seed),
        ]
    )
    if devices is not None:  # the same command, one rank per device, started through torchrun
        from mmx.workflows.launch import launch, parse_devices

        outputs = [flag for flag, on in (("--json", json_output), ("--quiet", quiet)) if on]
        raise typer.Exit(launch([*command[1:], *outputs], parse_devices(devices), tp))
    context = join(tp, None if device == "auto" else device)
    place_device = context.device if context.device is not None else resolve_device(device)
    place = Placement(place_device, resolve_dtype(dtype, place_device), chunk, tp, quantize, context)
    if context.rank == 0:
        check_out_dir(out, "bench")
    from mmx.workflows.bench.run import plan_subjects

    subjects = plan_subjects(
        model, place, layers=layers, archs=archs, compare_transformers=compare_transformers, paths=paths
    )
    ceilings = detect_peaks(place.device, place.dtype, measure=peaks == "measure")
    plan = Plan(sizes, decode_batches, decode_steps, repeats, seed, budget)
    params = {
        **plan.params(),
        "model": model,
        "layers": layers,
        "archs": archs,
        "compare_transformers": compare_transformers,
        "prefill_attention": paths,
        "chunk_size": chunk_size,
        "dtype": place.dtype_name,
        "device_name": ceilings.device,
        "peaks": peaks,
        **({"tp": tp} if tp > 1 else {}),  # absent for one device, so runs made before these options still resume
        **({"quantize_experts": quantize} if quantize else {}),
        **({"world_size": context.world} if context.distributed else {}),
    }
    run_bench(
        out,
        command=command,
        params=params,
        subjects=subjects,
        plan=plan,
        place=place,
        ceilings=ceilings,
        json_output=json_output,
        quiet=quiet,
    )


def device_kind(device: str, devices: str | None) -> str:
    """cuda or cpu: what the run measures on (it picks the default --max-len)."""
    if devices is not None:
        return "cpu" if devices.strip().startswith("cpu") else "cuda"
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if device == "cpu" else "cuda"


def run_bench(out: Path, *, json_output: bool, quiet: bool, **work: Any) -> None:
    """Measure with per-measurement lines on stderr, then print the table (or JSON)."""
    from mmx.workflows.bench.run import run_throughput

    log = (lambda _: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        described, records = run_throughput(
            out, **work, log=log, warn=_warn, announce=lambda line: print(line, file=sys.stderr)
        )
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command with --out {out} to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    if records is None:  # another rank of a torchrun job: rank 0 reports
        return
    ceilings = work["ceilings"]
    if json_output:
        print(json.dumps({"run_dir": str(out), "peaks": ceilings.to_dict(), "records": records}, indent=2))
        return
    title = f"throughput · {described['name']} · {ceilings.device} · {_peaks_text(ceilings)}"
    Console().print(summary_table(title, records))


def _peaks_text(ceilings: DevicePeaks) -> str:
    if ceilings.matmul_tflops is None:
        return f"peaks {ceilings.source}"
    return f"peaks {ceilings.matmul_tflops:.0f} TFLOP/s, {ceilings.bandwidth_tbs:.2f} TB/s ({ceilings.source})"
