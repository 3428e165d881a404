"""Where a decode step goes: time 8 steps of `small` cut to 8 layers per architecture, then torch.profiler over 4.

Usage on a GPU machine with mmx importable: python3 results/reference/throughput-profile-decode.py lightning hybrid
(the run behind the cuDNN finding in throughput-notes.md; its output is at the top of throughput-h200-log-2.txt).
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mmx.model.config import MiniMaxConfig
from mmx.workflows.bench.subjects import NativeRunner, build_native, reshape

dev = torch.device("cuda")
for arch in sys.argv[1:]:
    cfg = reshape(MiniMaxConfig.from_name("small"), 8, arch)
    runner = NativeRunner(build_native(cfg, dev, torch.bfloat16, 0), 4096)
    cache = runner.prefill(torch.randint(0, 259, (1, 4096), device=dev))
    rows = runner.expand(cache, 1, 64)
    tok = torch.randint(0, 259, (1,), device=dev)
    for _ in range(4):
        tok = runner.decode(tok, rows)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(8):
        tok = runner.decode(tok, rows)
    torch.cuda.synchronize()
    print(f"== {arch}: {(time.perf_counter() - t) / 8 * 1e3:.2f} ms/step", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(4):
            tok = runner.decode(tok, rows)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60)
    print(table, flush=True)
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8, max_name_column_width=60))
    del runner, cache, rows
    torch.cuda.empty_cache()
