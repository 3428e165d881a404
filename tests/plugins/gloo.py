"""Multi-process tests on the CPU: `gloo_ranks(fn, world, *args)` runs fn(rank, world, *args) in `world` forked
processes that see the environment torchrun gives its ranks (RANK, WORLD_SIZE, LOCAL_RANK, the rendezvous address),
so `torch.distributed.init_process_group()` — or mmx's own `join` — makes them one gloo job; the first rank's failure
is re-raised with its traceback. Forking (not spawning) costs milliseconds instead of an import of torch per rank;
the test process runs one intra-op thread, so no OpenMP pool is forked half-alive."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp


def rank_environment(rank: int, world: int, port: int) -> None:
    """What torchrun exports to rank `rank` of `world` on one machine."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    import torch.distributed as dist

    rank_environment(rank, world, port)
    torch.set_num_threads(1)
    try:
        fn(rank, world, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="session")
def gloo_ranks() -> Callable[..., None]:
    # Functional collectives import torch._dynamo on first use (seconds): once here, and the forks inherit it.
    import torch._dynamo  # noqa: F401

    def run(fn: Callable[..., None], world: int, *args: Any) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            mp.start_processes(_rank_main, args=(world, free_port(), fn, args), nprocs=world, start_method="fork")
        finally:
            torch.set_num_threads(threads)

    return run
