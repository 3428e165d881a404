"""Compile flash-linear-attention's autotuning configs in parallel, ahead of `mmx bench kernels`.

fla autotunes its chunk kernels the first time they run: Triton compiles every config (about 50 for the forward and
70 for the backward of `chunk_simple_gla` on Hopper) one after another, then times them. On a fresh machine that
compiling takes minutes, all inside the benchmark's first fla call. Here `--parts` worker processes each give every
fla autotuner a disjoint slice of its configs and run fla's forward and backward once on a short sequence, so Triton
compiles the slices side by side into its disk cache. The workers' own autotune picks are neither kept
(FLA_CACHE_RESULTS=0) nor meaningful; the benchmark autotunes over every config as usual, finding them compiled.
One worker also runs our backward and decode once (the forward candidates are those of
`benchmarks.kernels.sweep --compile-only`).

    python3 -m benchmarks.kernels.precompile --parts 8 --timeout 90
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from multiprocessing import TimeoutError as PoolTimeout
from multiprocessing import get_context

import torch

WARM_LENGTH = 4096  # fla specializes nothing on T, so any length compiles what the benchmark's lengths run


def slice_autotuners(part: int, parts: int) -> int:
    """Give each autotuner in the loaded fla.ops modules the configs part, part + parts, …; returns how many."""
    from triton.runtime.autotuner import Autotuner

    seen: set[int] = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("fla.ops") or module is None:
            continue
        for value in list(vars(module).values()):
            tuner = value
            while tuner is not None and not isinstance(tuner, Autotuner):  # through @heuristics wrappers
                tuner = getattr(tuner, "fn", None)
            if tuner is not None and id(tuner) not in seen:
                seen.add(id(tuner))
                tuner.configs = tuner.configs[part::parts] or tuner.configs[:1]
    return len(seen)


def compile_part(part: int, parts: int, heads: int, dim: int) -> int:
    """In a fresh process: slice the autotuners, then run fla's prefill and its backward once (bf16, on the GPU)."""
    os.environ["FLA_CACHE_RESULTS"] = "0"  # read when fla is imported, just below
    import fla.ops.simple_gla  # noqa: F401  (loads the modules whose autotuners get sliced)

    from mmx.kernels.dispatch import lightning_decode
    from mmx.workflows.bench.kernels import KernelBench

    tuners = slice_autotuners(part, parts)
    bench = KernelBench(torch.device("cuda"))
    q, k, v, slope = bench._inputs(1, WARM_LENGTH, heads, dim)
    runs = [bench._fla] if part else [bench._fla, bench._ours()]  # one worker also compiles our backward and decode
    for run in runs:
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        o = run(*leaves, slope)
        torch.autograd.grad(o, leaves, torch.randn_like(o))
    if not part:
        state = torch.zeros(4, heads, dim, dim, device=q.device)
        lightning_decode(q[0, :4], k[0, :4], v[0, :4], slope, state)  # [4, H, D]: four sequences, one token each
    torch.cuda.synchronize()
    return tuners


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.kernels.precompile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--parts", type=int, default=8, help="worker processes (each compiles 1/parts of the configs)")
    parser.add_argument("--heads", type=int, default=8, help="heads of the warm-up call (the benchmark starts at 8)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds before the workers are stopped")
    args = parser.parse_args(argv)
    from mmx.workflows.bench.kernels import fla_available

    if not torch.cuda.is_available() or not fla_available():
        print("precompile: needs a CUDA GPU and flash-linear-attention; nothing to do", flush=True)
        return 0
    work = [(i, args.parts, args.heads, args.head_dim) for i in range(args.parts)]
    with get_context("spawn").Pool(args.parts) as pool:
        result = pool.starmap_async(compile_part, work)
        try:
            tuners = result.get(args.timeout)
        except PoolTimeout:
            print(f"precompile: stopped after {args.timeout:.0f} s; what compiled stays cached", flush=True)
            pool.terminate()
            return 1
        except Exception as err:  # the benchmark then compiles what is missing itself
            print(f"precompile: a worker failed ({type(err).__name__}: {err})", flush=True)
            return 1
    print(f"precompile: {args.parts} workers compiled their slices of {max(tuners)} fla autotuners", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
