"""Device memory: what is free, and whether an exception means it ran out (the runners retry smaller on that)."""

from __future__ import annotations

import gc
import os

import torch


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OOM error, Python's MemoryError, or the CPU allocator's refusal (which torch raises as RuntimeError)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def release_memory() -> None:
    """Give cached allocations back after an OOM so the next, smaller attempt starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: the CUDA allocator's view, or MemAvailable for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
