"""The three collectives tensor and expert parallelism need, over PyTorch's functional collectives.

Functional collectives (`torch.distributed._functional_collectives`) return new tensors instead of writing in place,
which is what `torch.compile` traces; each result is waited for before it is returned, so callers see plain tensors.
A `group` of None means a single process: every collective is then the identity, and the sharded modules run
unchanged on one device (tensor parallel 1, e.g. with quantized experts).
"""

from __future__ import annotations

import torch
from torch.distributed import ProcessGroup


def _funcol():  # imported on first use: it pulls in torch._dynamo, seconds that single-process runs never pay
    import torch.distributed._functional_collectives as funcol

    return funcol


def _waited(tensor: torch.Tensor) -> torch.Tensor:
    funcol = _funcol()
    return tensor.wait() if isinstance(tensor, funcol.AsyncCollectiveTensor) else tensor


def group_size(group: ProcessGroup | None) -> int:
    """Ranks in `group` (1 for None)."""
    if group is None:
        return 1
    import torch.distributed as dist

    return dist.get_world_size(group)


def all_reduce(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """The sum of `x` over the group's ranks, on every rank."""
    if group is None:
        return x
    return _waited(_funcol().all_reduce(x, "sum", group))


def all_gather(x: torch.Tensor, dim: int, group: ProcessGroup | None) -> torch.Tensor:
    """Every rank's `x` (equal shapes) concatenated along `dim` in rank order, on every rank."""
    if group is None:
        return x
    size = group_size(group)
    gathered = _waited(_funcol().all_gather_single(x.contiguous(), 0, group))  # [size·n, ...] along dim 0
    if dim % x.dim() == 0:
        return gathered
    return torch.cat(gathered.chunk(size, dim=0), dim=dim)


def all_to_all(
    x: torch.Tensor, out_splits: list[int], in_splits: list[int], group: ProcessGroup | None
) -> torch.Tensor:
    """Send rows in_splits[r] of `x` (in order) to rank r; receive out_splits[r] rows from rank r, in rank order."""
    if group is None:
        return x
    return _waited(_funcol().all_to_all_single(x.contiguous(), out_splits, in_splits, group))


def all_min(value: int, group: ProcessGroup | None) -> int:
    """The smallest `value` over the group's ranks (a CPU tensor: the group's gloo side, or gloo itself)."""
    if group is None:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=group)
    return int(tensor.item())
