"""Where a decode step's time goes: time decode steps per architecture, then profile a few.

A preset (default `small`) cut to `--layers` layers with random weights is built per architecture; it prefills
`--context` random tokens, copies the cache into `--batch` rows, decodes a few untimed steps, times `--steps` steps
and records `--profile-steps` more with `torch.profiler`, printing the operators by host time and (on CUDA) by device
time. A step whose host time far exceeds its device time points at per-step host work, e.g. an attention backend
that builds a new execution plan every step because the key length grows by one.

    python -m benchmarks.profile_decode                                   # small ×8: hybrid and lightning, batch 1
    python -m benchmarks.profile_decode --archs hybrid,softmax --context 16k --batch 8
    python -m benchmarks.profile_decode --device cpu --preset tiny --context 1k --batch 2   # a check

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

WARM_STEPS = 4


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_steps(runner: NativeRunner, token: torch.Tensor, cache: object, steps: int) -> torch.Tensor:
    for _ in range(steps):
        token = runner.decode(token, cache)
    return token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--preset", default="small", help="model preset with random weights (see `mmx models`)")
    parser.add_argument("--layers", type=int, default=8, help="keep this many layers of the preset")
    parser.add_argument("--archs", default="hybrid,lightning", help="comma list of hybrid, lightning, softmax")
    parser.add_argument("--context", default="4k", help="tokens in the cache before decoding")
    parser.add_argument("--batch", type=int, default=1, help="rows decoded together")
    parser.add_argument("--steps", type=int, default=8, help="timed decode steps")
    parser.add_argument("--profile-steps", type=int, default=4, help="decode steps recorded by the profiler")
    parser.add_argument("--rows", type=int, default=12, help="operators per profiler table")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    context = parse_size(args.context)
    extra = WARM_STEPS + args.steps + args.profile_steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {args.preset} ×{args.layers} layers, {format_size(context)} cached")
    for arch in args.archs.split(","):
        config = reshape(MiniMaxConfig.from_name(args.preset), args.layers, arch)
        runner = NativeRunner(build_native(config, device, dtype, 0), min(context, 4096))
        cache = runner.prefill(torch.randint(0, 259, (1, context), device=device))
        rows = runner.expand(cache, args.batch, extra)
        token = decode_steps(runner, torch.randint(0, 259, (args.batch,), device=device), rows, WARM_STEPS)
        sync(device)
        start = time.perf_counter()
        token = decode_steps(runner, token, rows, args.steps)
        sync(device)
        print(f"== {arch}: {(time.perf_counter() - start) / args.steps * 1e3:.2f} ms/step", flush=True)
        with profile(activities=activities) as prof:
            token = decode_steps(runner, token, rows, args.profile_steps)
            sync(device)
        averages = prof.key_averages()
        print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60), flush=True)
        if device.type == "cuda":
            print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
        del runner, cache, rows
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
