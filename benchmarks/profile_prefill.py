"""Where a hybrid prefill's time goes: time whole prefills per architecture and chunk size, then profile one.

A preset (default `small`) cut to `--layers` layers with random weights is built per architecture (hybrid 7:1,
all-lightning, ...); each prefills `--length` random tokens through the same path `mmx bench throughput` uses, after a
warm-up of two chunks, `--repeats` times per chunk size. Then `torch.profiler` records one hybrid prefill at the first
chunk size and prints the operators by device time and by host time. A host-bound prefill shows as more self CPU
time than GPU kernel time, with device-to-host copies (e.g. the MoE's expert counts) high in the host table.

    python -m benchmarks.profile_prefill                                  # small ×8, 256k tokens, chunks 16k and 64k
    python -m benchmarks.profile_prefill --length 1m --chunks 64k --archs hybrid
    python -m benchmarks.profile_prefill --device cpu --preset tiny --length 4k --chunks 1k --repeats 1  # a check

Run from the repository root with mmx importable (`pip install -e .`, or `source benchmarks/gpu_env.sh`).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mmx.model.config import MiniMaxConfig
from mmx.sizes import format_size, parse_size
from mmx.workflows.bench.subjects import NativeRunner, build_native, reshape


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_prefill(runner: NativeRunner, ids: torch.Tensor) -> float:
    """Seconds for one whole prefill of `ids`, between device syncs."""
    sync(ids.device)
    start = time.perf_counter()
    runner.prefill(ids)
    sync(ids.device)
    return time.perf_counter() - start


def profile_prefill(runner: NativeRunner, ids: torch.Tensor, rows: int) -> None:
    """Print the operators of one prefill, by device time (on CUDA) and by host time."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ids.is_cuda else [])
    with profile(activities=activities) as prof:
        runner.prefill(ids)
        sync(ids.device)
    averages = prof.key_averages()
    if ids.is_cuda:
        print(averages.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70), flush=True)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=70), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--preset", default="small", help="model preset with random weights (see `mmx models`)")
    parser.add_argument("--layers", type=int, default=8, help="keep this many layers of the preset")
    parser.add_argument("--archs", default="hybrid,lightning", help="comma list of hybrid, lightning, softmax")
    parser.add_argument("--length", default="256k", help="prompt length in tokens, e.g. 256k or 1m")
    parser.add_argument("--chunks", default="16k,64k", help="comma list of prefill chunk sizes; the first is profiled")
    parser.add_argument("--repeats", type=int, default=3, help="timed prefills per architecture and chunk size")
    parser.add_argument("--rows", type=int, default=25, help="operators per profiler table")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    length = parse_size(args.length)
    chunks = [parse_size(c) for c in args.chunks.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {args.preset} ×{args.layers} layers, {format_size(length)} tokens")
    ids = torch.randint(0, 259, (1, length), device=device, generator=torch.Generator(device).manual_seed(0))
    for arch in args.archs.split(","):
        config = reshape(MiniMaxConfig.from_name(args.preset), args.layers, arch)
        model = build_native(config, device, dtype, 0)
        for chunk in chunks:
            runner = NativeRunner(model, chunk)
            runner.prefill(ids[:, : 2 * chunk])  # warm-up: kernels and attention plans for two chunks
            times = [timed_prefill(runner, ids) for _ in range(args.repeats)]
            print(f"== {arch}, chunk {format_size(chunk)}: {' '.join(f'{t:.3f}' for t in times)} s", flush=True)
        if arch == "hybrid":
            print(f"== profile of one hybrid prefill, chunk {format_size(chunks[0])}", flush=True)
            profile_prefill(NativeRunner(model, chunks[0]), ids, args.rows)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
