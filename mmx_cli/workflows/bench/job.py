"""`mmx bench throughput` as a torchrun job: every rank measures in step, rank 0 records.

Under tensor parallelism the ranks of a replica run one model together; under data parallelism each replica runs its
own copy on the same prompt at the same time. Either way the ranks must take the same decisions (skip a measurement,
repeat a prefill, stop at the time budget) or their collectives would wait on each other forever, so rank 0 decides
and tells the others (`agree`). Timings start and stop at a device-side barrier, so a timed span covers every rank
(the slowest one sets it), and each record carries the peak memory of every rank.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mmx.model.parallel.runtime import ParallelContext

OBJECTS_TIMEOUT = timedelta(hours=6)  # rank 0 may build and warm up a model for minutes while the others wait


class BenchJob:
    """The ranks of one bench job, with rank 0 deciding and recording."""

    def __init__(self, context: ParallelContext) -> None:
        self.context = context
        self.group = dist.new_group(backend="gloo", timeout=OBJECTS_TIMEOUT)  # objects, never device tensors

    @property
    def writer(self) -> bool:
        return self.context.rank == 0

    @property
    def replicas(self) -> int:
        """Model copies measuring at once (data parallel): a job's tokens per second count every one."""
        return self.context.dp

    @property
    def world(self) -> int:
        return self.context.world

    def agree(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        shared = [value]
        dist.broadcast_object_list(shared, src=0, group=self.group)
        return shared[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def together(self, device: torch.device) -> None:
        """Return once every rank got here: an all-reduce on the device, ordered after its queued work."""
        dist.all_reduce(torch.zeros(1, device=device))

    def describe(self) -> dict[str, int]:
        return self.context.describe()


class NoStore:
    """What ranks other than 0 write to: nothing; they know what is on disk from rank 0."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def bench(self) -> list[dict[str, Any]]:
        return list(self.records)

    def append_bench(self, record: dict[str, Any]) -> None:
        """Rank 0 records the job's measurements."""
