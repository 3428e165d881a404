"""Expert parallelism: each rank holds E / size experts, and tokens travel to the experts they chose.

Under tensor parallelism every rank of a group sees the same hidden states. The MoE block splits those tokens
evenly, so each rank routes only its own share; an all-to-all sends every (token, chosen expert) row to the rank
holding that expert, the experts run on what arrived, a second all-to-all returns the outputs, and each rank mixes
its tokens' k outputs with the renormalised router weights in a fixed order (as `SparseMoE` does). An all-gather
restores the full set of tokens on every rank. Per token this moves its hidden vector k times each way, instead of
computing every expert everywhere; it is how MiniMax describes serving the model's experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup

from mmx.model.modeling import SparseMoE
from mmx.model.parallel.comm import all_gather, all_to_all
from mmx.model.parallel.layout import ShardLayout


class ExpertParallelMoE(nn.Module):
    """Top-k routing over experts spread across a group; parameter names match `SparseMoE`'s (global expert ids)."""

    def __init__(self, moe: SparseMoE, layout: ShardLayout, group: ProcessGroup | None) -> None:
        super().__init__()
        self.top_k = moe.top_k
        self.gate = moe.gate  # the router is replicated: [E, h]
        self.experts = nn.ModuleDict({str(e): moe.experts[e] for e in layout.experts})
        self.first_expert = layout.experts.start
        self.per_rank = len(layout.experts)
        self.rank, self.size = layout.rank, layout.size
        self.group = group

    def _my_tokens(self, n: int) -> tuple[int, int, int]:
        """(start, stop, rows per rank) of this rank's share of n tokens; the last shares may be short or empty."""
        per = -(-n // self.size)
        start = min(self.rank * per, n)
        return start, min(start + per, n), per

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, h], the same on every rank
        start, stop, per = self._my_tokens(flat.shape[0])
        mine = flat[start:stop]  # [n, h]
        probs = torch.softmax(F.linear(mine.float(), self.gate.weight.float()), dim=-1)  # [n, E] fp32
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [n, k]
        weights = weights / weights.sum(dim=-1, keepdim=True)
        order = chosen.flatten().argsort(stable=True)  # [n·k] (token, slot) pairs grouped by expert, hence by rank
        experts_sent = chosen.flatten()[order]  # [n·k]
        rows_sent = mine[order // self.top_k]  # [n·k, h]
        outputs = self._exchange(rows_sent, experts_sent)  # [n·k, h] in the order sent
        per_slot = outputs[order.argsort()].view(-1, self.top_k, shape[-1])  # [n, k, h] back in token order
        mixed = (per_slot.float() * weights[..., None]).sum(dim=1).to(x.dtype)  # [n, h]
        padded = mixed.new_zeros(per, shape[-1])  # every rank contributes `per` rows to the gather
        padded[: stop - start] = mixed
        return all_gather(padded, 0, self.group)[: flat.shape[0]].view(shape)

    def _exchange(self, rows: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Run each row through its expert on the rank that holds it; return the outputs in the order of `rows`."""
        send = torch.bincount(experts // self.per_rank, minlength=self.size)  # [size] rows for each rank
        recv = all_to_all(send, [1] * self.size, [1] * self.size, self.group)  # [size] rows from each rank
        send_counts, recv_counts = send.tolist(), recv.tolist()
        arrived = all_to_all(rows, recv_counts, send_counts, self.group)  # [R, h] grouped by source rank
        arrived_experts = all_to_all(experts, recv_counts, send_counts, self.group) - self.first_expert  # [R]
        computed = self._run_local(arrived, arrived_experts)  # [R, h]
        return all_to_all(computed, send_counts, recv_counts, self.group)  # [n·k, h]

    def _run_local(self, rows: torch.Tensor, local_ids: torch.Tensor) -> torch.Tensor:
        """rows [R, h] through this rank's experts (local_ids [R] in 0 … per_rank − 1), outputs in the same order."""
        if rows.shape[0] == 0:
            return rows
        order = local_ids.argsort(stable=True)
        counts = torch.bincount(local_ids, minlength=self.per_rank).tolist()
        pieces = rows[order].split(counts)
        outputs = [expert(piece) for expert, piece in zip(self.experts.values(), pieces, strict=True) if piece.shape[0]]
        return torch.cat(outputs)[order.argsort()]
