"""Where a hybrid prefill goes: `small` cut to 8 layers, 256k tokens, per architecture and prefill chunk size, then
torch.profiler over one hybrid prefill.

Usage on a GPU machine with mmx importable: python3 results/reference/throughput-profile-prefill.py [LENGTH]
(the run behind the session-3 prefill notes in throughput-notes.md; its output is in the session-3 log).
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mmx.model.config import MiniMaxConfig
from mmx.workflows.bench.subjects import NativeRunner, build_native, reshape

dev = torch.device("cuda")
length = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 18
ids = torch.randint(0, 259, (1, length), device=dev)


def timed(runner: NativeRunner) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    runner.prefill(ids)
    torch.cuda.synchronize()
    return time.perf_counter() - start


for arch in ("hybrid", "lightning"):
    model = build_native(reshape(MiniMaxConfig.from_name("small"), 8, arch), dev, torch.bfloat16, 0)
    for chunk in (16384, 65536):
        runner = NativeRunner(model, chunk)
        runner.prefill(ids[:, : 2 * chunk])  # warm-up: kernels and attention plans for two chunks
        times = [timed(runner) for _ in range(3)]
        print(f"== {arch} chunk {chunk}: {' '.join(f'{t:.3f}' for t in times)} s for {length} tokens", flush=True)
    if arch == "hybrid":
        runner = NativeRunner(model, 16384)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            runner.prefill(ids)
            torch.cuda.synchronize()
        averages = prof.key_averages()
        print(averages.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70), flush=True)
        print(averages.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=70), flush=True)
    del model
    torch.cuda.empty_cache()
