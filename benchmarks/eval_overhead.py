"""How much of an `mmx eval` sweep is not the model's forward pass: the runner's own overhead, target < 5%.

Runs a RULER sweep through `mmx.workflows.evaluate.sweep.run_sweep` exactly as `mmx eval ruler` does (temporary run
directory, samples appended and fsynced one by one, scoring, summary.csv after every cell) and splits its wall time
into

  forward   time inside `MiniMaxForCausalLM.forward` (forward hooks) and in the fixed-shape decode steps a GPU replays
            from a CUDA graph (`FixedDecoder`), CUDA synchronised at both ends of each
  decode    the rest of `backend.generate`: tokenising, cache rows, argmax, stop checks
  build     `Task.samples`: haystacks, needles, exact-length fitting
  runner    everything else: token counts, scoring, appending records, summaries

Overhead = 1 - forward / wall. Model loading and imports happen before the clock starts. Usage:

    python -m benchmarks.eval_overhead --model random:mmx-mini --lengths 4k,8k --samples 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

import torch

from mmx.model.backends.base import load_backend
from mmx.results.store import RunStore
from mmx.sizes import parse_sizes
from mmx.tasks import SUITES, get_task
from mmx.workflows.evaluate.sweep import Sweep, run_sweep
from mmx.workflows.provenance import git_commit, run_metadata


class Clock:
    """Accumulated seconds per phase; `forward` comes from hooks, the others from wrapped callables."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = {"forward": 0.0, "generate": 0.0, "build": 0.0}
        self._start = 0.0

    def sync(self) -> None:
        """Wait for queued GPU work so time lands in the phase that launched it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def hook(self, model: torch.nn.Module) -> None:
        """Time every top-level forward of `model`."""

        def before(*_: Any) -> None:
            self.sync()
            self._start = time.perf_counter()

        def after(*_: Any) -> None:
            self.sync()
            self.seconds["forward"] += time.perf_counter() - self._start

        model.register_forward_pre_hook(before)
        model.register_forward_hook(after)

    def time_decode_steps(self) -> None:
        """Count the fixed-shape decode steps (graph replays on a GPU, which no forward hook sees) as forward time."""
        from mmx.model.generate import FixedDecoder

        step = FixedDecoder.__call__

        def timed(decoder: FixedDecoder, tokens: torch.Tensor) -> torch.Tensor:
            self.sync()
            start = time.perf_counter()
            out = step(decoder, tokens)
            self.sync()
            self.seconds["forward"] += time.perf_counter() - start
            return out

        FixedDecoder.__call__ = timed  # type: ignore[method-assign]

    def wrap(self, phase: str, fn: Any) -> Any:
        """`fn`, with its time added to `phase`."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return timed


def measure(model: str, tasks: list[str], lengths: list[int], samples: int, batch_size: int | None,
            prefix_reuse: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run the sweep once into a temporary directory and return the time split and overhead."""
    backend = load_backend(model)
    clock = Clock(backend.model.device)
    clock.hook(backend.model)
    clock.time_decode_steps()
    backend.generate = clock.wrap("generate", backend.generate)
    chosen = {}
    for name in tasks:
        task = get_task(name)
        task.samples = clock.wrap("build", task.samples)
        chosen[task.name] = task
    sweep = Sweep("ruler", chosen, lengths, samples, seed=0, batch_size=batch_size, prefix_reuse=prefix_reuse)
    described = backend.describe()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        store.open(run_metadata("eval", ["bench_runner_overhead"], "ruler", described, sweep.params(described)))
        start = time.perf_counter()
        result = run_sweep(backend, sweep, store)
        wall = time.perf_counter() - start
    timing = result.timing
    s = clock.seconds
    split = {
        "forward": s["forward"],
        "decode": s["generate"] - s["forward"],
        "build": s["build"],
        "runner": wall - s["generate"] - s["build"],
    }
    return {
        "wall_s": wall,
        "seconds": split,
        "overhead_pct": 100.0 * (1.0 - s["forward"] / wall),
        "prefill_s": timing.prefill_s if timing else None,
        "prefilled_tokens": timing.prefilled_tokens if timing else None,
        "read_tokens": timing.read_tokens if timing else None,
        "prefix_reuse": prefix_reuse,
        "samples": len(result.records),
        "skipped_lengths": result.skipped_lengths,
        "model": described["spec"],
        "device": described["device"],
        "dtype": described["dtype"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:mmx-mini", help="model spec (default: random:mmx-mini)")
    parser.add_argument("--tasks", default="all", help="all, or a comma list of RULER tasks")
    parser.add_argument("--lengths", default="4k,8k", help="comma-separated sizes (default: 4k,8k)")
    parser.add_argument("--samples", type=int, default=2, help="samples per task per length (default: 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: auto, as mmx eval")
    parser.add_argument("--no-prefix-reuse", action="store_true", help="prefill every prompt alone")
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = parser.parse_args()
    tasks = SUITES["ruler"] if args.tasks == "all" else args.tasks.split(",")
    lengths = parse_sizes(args.lengths)
    result = measure(args.model, tasks, lengths, args.samples, args.batch_size, not args.no_prefix_reuse)
    result.update(
        command=["python", "-m", "benchmarks.eval_overhead", *sys.argv[1:]],
        tasks=tasks,
        lengths=lengths,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        torch=torch.__version__,
        git_commit=git_commit(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['model']} on {result['device']} ({result['dtype']}), {result['samples']} samples, {result['machine']}"
    )
    for phase, seconds in result["seconds"].items():
        print(f"  {phase:<8} {seconds:9.2f} s  {100 * seconds / result['wall_s']:6.2f} %")
    print(f"  {'wall':<8} {result['wall_s']:9.2f} s")
    print(f"overhead (everything but forward): {result['overhead_pct']:.2f} %")


if __name__ == "__main__":
    main()
