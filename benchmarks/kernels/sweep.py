"""Forward tuning sweep on one GPU: time candidate KernelConfigs on long sequences, pick the fastest correct one.

`python3 -m benchmarks.kernels.sweep --lengths 1048576,4194304 --bandwidth 4.8 --emit best.json` prints one line per
candidate and length: the whole forward in ms and as a share of the HBM floor (q, k, v read and o written once, at
`--bandwidth` TB/s), the local-state and outputs kernels on their own with their registers and spills, and the
output's error against the fp32 PyTorch path (at the first length). It ends with the winner: the candidate with the
least total time among those that ran at every length and agree with the reference, written as the JSON object that
MMX_KERNEL_CONFIG takes, so that a following `mmx bench kernels` (or any run) uses it without a code change.

Candidates are compiled first in parallel worker processes (Triton keeps the binaries in its disk cache), so the
timed loop does not wait on the compiler; `--compile-only` does just that (e.g. while something else uses the GPU),
and `--budget` stops starting new candidates once that many seconds passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import torch

from mmx.kernels.plan import KernelConfig, config_from_json, plan_for
from mmx.kernels.testing import minimax_slopes, random_qkv, rel_rms
from mmx.workflows.bench.kernels import FWD_CANDIDATES, INPUT_SCALE, kernel_stats

Winner = tuple[str, dict[str, Any]]  # a candidate: its name and its changes from the built-in defaults
LOCAL_FIELDS = ("local_chunk", "local_warps", "local_stages")
MAX_ERROR = 1e-2  # relative RMS of bf16 outputs against the fp32 PyTorch path (the last H200 run measured 2.8e-3)
WARM_LENGTH = 65536  # long enough for several segments, so every kernel of the forward gets compiled


@dataclass
class Row:
    """One candidate at one length."""

    name: str
    changes: dict[str, Any]
    length: int
    status: str = "ok"  # "ok" | "wrong" (disagrees with the reference) | "error"
    ms: float | None = None
    local_ms: float | None = None
    outputs_ms: float | None = None
    floor_fraction: float | None = None
    error: float | None = None
    local_stats: dict[str, Any] = field(default_factory=dict)
    outputs_stats: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def line(self) -> str:
        if self.status == "error":
            return f"{self.name:<28} T={self.length:<8} error: {self.note}"
        ms = f"{self.ms:8.3f} ms {self.floor_fraction:4.0%} of floor" if self.ms is not None else "-"
        err = f"err {self.error:.1e}" if self.error is not None else ""
        kernels = f"local {_fmt(self.local_ms, self.local_stats)}  outputs {_fmt(self.outputs_ms, self.outputs_stats)}"
        return f"{self.name:<28} T={self.length:<8} {ms}  {kernels}  {err} {self.status} {json.dumps(self.changes)}"


def _fmt(ms: float | None, stats: dict[str, Any]) -> str:
    head = f"{ms:.3f} ms" if ms is not None else "-"
    return f"{head} ({stats.get('regs')} regs, {stats.get('spills')} spilled, {stats.get('shared')} B shared)"


def pick(rows: Sequence[Row], lengths: Sequence[int]) -> Winner | None:
    """The candidate with the least total ms over `lengths` among those measured ok at every one of them."""
    totals: dict[str, tuple[float, dict[str, Any]]] = {}
    for name in dict.fromkeys(r.name for r in rows):
        mine = {r.length: r for r in rows if r.name == name}
        if all(n in mine and mine[n].status == "ok" and mine[n].ms is not None for n in lengths):
            totals[name] = (sum(mine[n].ms for n in lengths), mine[lengths[0]].changes)  # type: ignore[misc]
    if not totals:
        return None
    name = min(totals, key=lambda n: totals[n][0])
    return name, totals[name][1]


def merged(rows: Sequence[Row]) -> dict[str, Any] | None:
    """The fastest outputs kernel's changes plus the local_* fields of the fastest local-state kernel, when these
    come from different candidates (the two kernels are independent); None when there is nothing new to try."""
    ok = [r for r in rows if r.status == "ok" and r.outputs_ms is not None and r.local_ms is not None]
    longest = max((r.length for r in ok), default=None)
    at = [r for r in ok if r.length == longest]
    local_only = [r for r in at if set(r.changes) <= set(LOCAL_FIELDS)]
    if not at or not local_only:
        return None
    best_out = min(at, key=lambda r: r.outputs_ms)  # type: ignore[arg-type,return-value]
    best_local = min(local_only, key=lambda r: r.local_ms)  # type: ignore[arg-type,return-value]
    if best_out.name == best_local.name or not best_local.changes:
        return None
    changes = {k: v for k, v in best_out.changes.items() if k not in LOCAL_FIELDS} | best_local.changes
    return None if any(r.changes == changes for r in rows) else changes


def _time_ms(fn: Callable[[], object]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _inputs(length: int, heads: int, dim: int) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(length)  # every candidate sees the same inputs, and so does the reference
    q, k, v = random_qkv(1, length, heads, dim, dtype=torch.bfloat16, device="cuda", scale=INPUT_SCALE)
    return q, k, v, minimax_slopes(heads, device="cuda")


def measure(name: str, changes: dict[str, Any], inputs: tuple[torch.Tensor, ...], bandwidth: float,
            reference: torch.Tensor | None) -> Row:  # fmt: skip
    """Time one candidate's forward and its two main kernels on `inputs`; compare with `reference` when given."""
    from mmx.kernels import triton_fwd
    from mmx.kernels.triton_attn import lightning_attn_triton
    from mmx.kernels.triton_scan import scan_segments

    q, k, v, slope = inputs
    _, length, heads, dim = q.shape
    row = Row(name, changes, length)
    try:
        config = KernelConfig(**changes)
        with torch.no_grad():
            out = lightning_attn_triton(q, k, v, slope, config=config)[0]
            row.ms = _time_ms(lambda: lightning_attn_triton(q, k, v, slope, config=config))
            plan = plan_for(tuple(q.shape), q.dtype, None, q.device, config)

            def local() -> tuple[torch.Tensor, object]:
                return triton_fwd.fitting("fwd_local", lambda c: triton_fwd.local_states(k, v, slope, plan, c), config,
                                          k, dim)  # fmt: skip

            states, local_kernel = local()
            starts, _ = scan_segments(states, None, slope, plan, reverse=False)

            def outputs() -> tuple[torch.Tensor, object]:
                return triton_fwd.fitting("fwd_out", lambda c: triton_fwd.outputs(q, k, v, slope, starts, True, plan,
                                          c, None), config, q, dim)  # fmt: skip

            _, out_kernel = outputs()
            row.local_ms, row.outputs_ms = _time_ms(local), _time_ms(outputs)
        row.local_stats, row.outputs_stats = kernel_stats(local_kernel), kernel_stats(out_kernel)
        row.floor_fraction = 4 * q.numel() * q.element_size() / bandwidth / (row.ms / 1e3)
        if reference is not None:
            row.error = rel_rms(out, reference)
            row.status = "ok" if row.error < MAX_ERROR else "wrong"
    except Exception as err:  # one candidate failing (shared memory, compiler) must not end the sweep
        row.status, row.note = "error", f"{type(err).__name__}: {err}"[:200]
    if q.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return row


def _warm_one(changes: dict[str, Any], heads: int, dim: int) -> None:
    """Compile one candidate's forward kernels (in a worker process; Triton keeps them in its disk cache)."""
    from mmx.kernels.triton_attn import lightning_attn_triton

    try:
        q, k, v, slope = _inputs(WARM_LENGTH, heads, dim)
        with torch.no_grad():
            lightning_attn_triton(q, k, v, slope, config=KernelConfig(**changes))
        torch.cuda.synchronize()
    except Exception:  # the candidate fails again when it is measured, and that row says why
        return


def warm(candidates: Sequence[dict[str, Any]], heads: int, dim: int, workers: int) -> None:
    """Compile the candidates in `workers` processes at once; the compiler is what a sweep would otherwise wait on."""
    if workers < 2:
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_warm_one, candidates, [heads] * len(candidates), [dim] * len(candidates)))


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy (read plus write), the floor's basis when none is given."""
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (_time_ms(lambda: dst.copy_(src)) / 1e3)


def reference_output(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The fp32 PyTorch path's output on the same (bf16-rounded) inputs."""
    from mmx.kernels.dispatch import lightning_attn

    q, k, v, slope = inputs
    with torch.no_grad():
        return lightning_attn(q.float(), k.float(), v.float(), slope, impl="torch")[0]


def run(lengths: Sequence[int], heads: int, dim: int, bandwidth: float | None, budget: float, workers: int,
        candidates: Sequence[Winner] = FWD_CANDIDATES) -> tuple[list[Row], Winner | None]:  # fmt: skip
    """Measure the candidates (then their merge, if new) at every length; returns the rows and the winner."""
    started = time.monotonic()
    todo = list(candidates)
    warm([c for _, c in todo], heads, dim, workers)
    basis = bandwidth * 1e12 if bandwidth else copy_bandwidth()
    first = _inputs(lengths[0], heads, dim)
    device = torch.cuda.get_device_name(first[0].device) if first[0].is_cuda else str(first[0].device)
    print(f"{device}: H={heads} D={dim} {first[0].dtype}, floor at {basis / 1e12:.2f} TB/s, "
          f"compiled in {time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
    reference = reference_output(first)
    del first
    rows: list[Row] = []
    while todo:
        if time.monotonic() - started > budget:
            print(f"budget of {budget:.0f} s spent; not measured: {', '.join(n for n, _ in todo)}", flush=True)
            break
        name, changes = todo.pop(0)
        for length in lengths:
            check = reference if length == lengths[0] else None
            row = measure(name, changes, _inputs(length, heads, dim), basis, check)
            rows.append(row)
            print(row.line(), flush=True)
        if not todo and (combo := merged(rows)) is not None:
            todo.append(("merged", combo))
    return rows, pick(rows, lengths)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.kernels.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1048576,4194304", help="comma list of sequence lengths in tokens")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--bandwidth", type=float, default=None, help="HBM TB/s for the floor (default: measured)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds after which no candidate starts")
    parser.add_argument("--workers", type=int, default=8, help="processes compiling candidates up front (0: none)")
    parser.add_argument("--compile-only", action="store_true", help="compile the candidates, measure nothing")
    parser.add_argument("--emit", default=None, help="write the winner's MMX_KERNEL_CONFIG JSON to this file")
    args = parser.parse_args(argv)
    try:
        lengths = [int(n) for n in args.lengths.split(",")]
    except ValueError:
        parser.error(f"--lengths takes integers, got {args.lengths!r}")
    if not torch.cuda.is_available():
        print("the sweep needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.compile_only:
        warm([changes for _, changes in FWD_CANDIDATES], args.heads, args.head_dim, args.workers)
        return 0
    _, winner = run(lengths, args.heads, args.head_dim, args.bandwidth, args.budget, args.workers)
    if winner is None:
        print("no candidate ran correctly at every length; keeping the built-in defaults", flush=True)
        return 1
    name, changes = winner
    text = json.dumps(changes)
    config_from_json(text)  # the emitted text must be what the environment variable accepts
    print(f"winner: {name}  MMX_KERNEL_CONFIG='{text}'", flush=True)
    if args.emit:
        with open(args.emit, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
