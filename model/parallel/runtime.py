"""This process's place in a `torchrun` job: its rank, its device, and its tensor-parallel and data-parallel groups.

mmx runs on PyTorch's own distributed engine: `torchrun` (or `mmx ... --devices`, which starts torchrun itself) sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address, and `join` reads them (env://). The world of N ranks is cut
into N / tp replicas of tp consecutive ranks each: a replica holds one copy of the model, tensor parallel across its
ranks (one node's GPUs, where the all-reduces are fast), and the replicas split a sweep between them (data parallel).
Without torchrun the process is a world of one and nothing is initialised.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup

from mmx.errors import MmxError

_CONTEXT: ParallelContext | None = None


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits: global rank of world, its replica (dp_rank of dp) and its rank within it."""

    rank: int
    world: int
    local_rank: int
    tp: int
    tp_group: ProcessGroup | None  # None when tp == 1
    device: torch.device | None  # this rank's device in a job; None in a world of one (the caller's --device)

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def dp(self) -> int:
        return self.world // self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def distributed(self) -> bool:
        """Whether a process group exists (a torchrun job of more than one rank)."""
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Whether this rank speaks for its replica (tensor-parallel rank 0): it reports what the replica computed."""
        return self.tp_rank == 0

    def describe(self) -> dict[str, int]:
        return {"world_size": self.world, "tensor_parallel": self.tp, "data_parallel": self.dp}


def launched() -> bool:
    """Whether this process is one rank of a multi-process torchrun job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(requested: str | None) -> torch.device:
    """The device of this rank: `cuda`/`auto` (with CUDA present) -> cuda:LOCAL_RANK, `cpu` -> cpu."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    choice = "auto" if requested is None else str(requested)
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if choice != "cuda":
        raise MmxError(
            f"--device {choice} names one device for every rank of a distributed job",
            "pass --device cuda (each rank takes cuda:LOCAL_RANK) or choose the GPUs with --devices",
        )
    if not torch.cuda.is_available():
        raise MmxError("CUDA is not available on this machine", "use --device cpu")
    if local_rank >= torch.cuda.device_count():
        raise MmxError(
            f"local rank {local_rank} has no GPU: this machine shows {torch.cuda.device_count()}",
            "start at most one process per GPU (torchrun --nproc-per-node)",
        )
    return torch.device("cuda", local_rank)


def join(tp: int = 1, device: str | None = None) -> ParallelContext:
    """This process's context, initialising the process group (env://) on first call in a torchrun job.

    `tp` ranks form one model replica; the world must be a multiple of it. Every later call must ask for the same tp.
    """
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if tp > 1:
            raise MmxError(
                f"--tp {tp} needs {tp} processes, one per GPU",
                f"launch with `torchrun --nproc-per-node {tp} -m mmx ...`, or add --devices "
                + ",".join(map(str, range(tp))),
            )
        return ParallelContext(0, 1, 0, 1, None, None)
    if _CONTEXT is not None:
        if _CONTEXT.tp != tp:
            raise MmxError(f"this job already runs tensor parallel {_CONTEXT.tp}", f"cannot switch to --tp {tp}")
        return _CONTEXT
    if world % tp:
        raise MmxError(f"--tp {tp} does not divide the {world} ranks of this job", "make the rank count a multiple")
    place = rank_device(device)
    if not dist.is_initialized():
        if place.type == "cuda":
            torch.cuda.set_device(place)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if place.type == "cuda" else "gloo")
        atexit.register(_leave)
    rank = dist.get_rank()
    tp_group = None
    for replica in range(world // tp):  # every rank creates every group, in the same order
        ranks = list(range(replica * tp, (replica + 1) * tp))
        group = dist.new_group(ranks) if tp > 1 else None
        if rank in ranks:
            tp_group = group
    _CONTEXT = ParallelContext(rank, world, int(os.environ.get("LOCAL_RANK", "0")), tp, tp_group, place)
    return _CONTEXT


def current() -> ParallelContext | None:
    """The context `join` made, if any."""
    return _CONTEXT


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
