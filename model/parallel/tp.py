"""Tensor parallelism: a built `MiniMaxForCausalLM` cut in place into one rank's share of a group.

The Megatron recipe, as gpt-fast applies it to a single-file model: projections into heads are column-parallel (each
rank keeps the rows of its heads, so attention runs on local heads with no communication), projections out of heads
are row-parallel (each rank multiplies its heads' columns, and an all-reduce sums the partial outputs). Specific to
MiniMax-Text-01:

- lightning layers normalise the output over all H·D channels jointly, so the norm all-reduces each token's sum of
  squares before scaling its local channels; slopes are the local heads' own;
- softmax layers keep the key/value heads their query heads read (`ShardLayout.kv_heads`);
- the MoE block becomes expert parallel (`ep.ExpertParallelMoE`);
- embedding and lm_head are split by vocabulary rows (the lm_head's logits are gathered, so callers see [.., V]).

Every module keeps its parameter names, so the sharded checkpoint reader assigns slices by the original keys; the
module forwards themselves are unchanged, only their weights and head counts shrink.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup

from mmx.model.modeling import (
    DeviceConstant,
    LightningAttention,
    MiniMaxForCausalLM,
    SoftmaxAttention,
    lightning_slopes,
)
from mmx.model.parallel.comm import all_gather, all_reduce
from mmx.model.parallel.ep import ExpertParallelMoE
from mmx.model.parallel.layout import ShardLayout


class RowParallelLinear(nn.Module):
    """y = Σ_ranks x_r W_rᵀ: this rank's input features in, the full output out (all-reduced)."""

    def __init__(self, weight: torch.Tensor, group: ProcessGroup | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [out, in / size]
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return all_reduce(F.linear(x, self.weight), self.group)


class ParallelRMSNorm(nn.Module):
    """RMSNorm over channels spread across ranks: the mean square is taken over all `total` channels."""

    def __init__(self, weight: torch.Tensor, total: int, eps: float, group: ProcessGroup | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [local channels]
        self.total, self.eps, self.group = total, eps, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        square_sum = all_reduce(xf.pow(2).sum(-1, keepdim=True), self.group)  # [..., 1] over every rank's channels
        normed = xf * torch.rsqrt(square_sum / self.total + self.eps)
        return self.weight * normed.to(x.dtype)


class VocabParallelEmbedding(nn.Module):
    """Each rank looks up the ids in its vocabulary range (zeros elsewhere); an all-reduce assembles the vectors."""

    def __init__(self, weight: torch.Tensor, vocab: range, group: ProcessGroup | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [vocab rows per rank, h]
        self.start, self.stop, self.group = vocab.start, vocab.stop, group

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        here = (input_ids >= self.start) & (input_ids < self.stop)  # [B, T]
        rows = F.embedding(torch.where(here, input_ids - self.start, 0), self.weight)  # [B, T, h]
        return all_reduce(rows * here[..., None].to(rows.dtype), self.group)


class ParallelLMHead(nn.Module):
    """Each rank computes the logits of its vocabulary rows; they are gathered so every rank returns [.., V]."""

    def __init__(self, weight: torch.Tensor, vocab_size: int, group: ProcessGroup | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [vocab rows per rank, h]
        self.vocab_size, self.group = vocab_size, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = F.linear(x, self.weight)  # [..., rows per rank]
        return all_gather(local, -1, self.group)[..., : self.vocab_size]  # padding rows dropped


def _rows(weight: torch.Tensor, dim: int, start: int, stop: int, length: int | None = None) -> torch.Tensor:
    """A copy of weight's [start, stop) along `dim`, zero-padded to `length` (on the weight's device, meta too)."""
    piece = weight.narrow(dim, start, stop - start)
    if length is None or length == stop - start:
        return piece.clone()
    shape = list(weight.shape)
    shape[dim] = length
    padded = weight.new_zeros(shape)
    padded.narrow(dim, 0, stop - start).copy_(piece)
    return padded


def _linear(linear: nn.Linear, dim: int, start: int, stop: int) -> nn.Linear:
    """An nn.Linear holding linear's rows (dim 0) or columns (dim 1) [start, stop)."""
    weight = _rows(linear.weight.data, dim, start, stop)
    out_features, in_features = weight.shape
    piece = nn.Linear(in_features, out_features, bias=False, device="meta")
    piece.weight = nn.Parameter(weight, requires_grad=False)
    return piece


def _shard_lightning(attn: LightningAttention, layout: ShardLayout, group: ProcessGroup | None) -> None:
    config, D = layout.config, layout.config.head_dim
    heads = layout.heads
    attn.qkv_proj = _linear(attn.qkv_proj, 0, 3 * D * heads.start, 3 * D * heads.stop)  # per head [q_h | k_h | v_h]
    attn.output_gate = _linear(attn.output_gate, 0, D * heads.start, D * heads.stop)
    attn.out_proj = RowParallelLinear(_rows(attn.out_proj.weight.data, 1, D * heads.start, D * heads.stop), group)
    norm_weight = _rows(attn.norm.weight.data, 0, D * heads.start, D * heads.stop)
    attn.norm = ParallelRMSNorm(norm_weight, config.num_attention_heads * D, attn.norm.eps, group)
    slopes = lightning_slopes(config.num_attention_heads, attn.layer, config.num_hidden_layers)  # [H]
    attn.slope = DeviceConstant(slopes[heads.start : heads.stop])
    attn.num_heads = len(heads)


def _shard_softmax(attn: SoftmaxAttention, layout: ShardLayout, group: ProcessGroup | None) -> None:
    D, heads, kv = layout.config.head_dim, layout.heads, layout.kv_heads
    attn.q_proj = _linear(attn.q_proj, 0, D * heads.start, D * heads.stop)
    attn.k_proj = _linear(attn.k_proj, 0, D * kv.start, D * kv.stop)
    attn.v_proj = _linear(attn.v_proj, 0, D * kv.start, D * kv.stop)
    attn.o_proj = RowParallelLinear(_rows(attn.o_proj.weight.data, 1, D * heads.start, D * heads.stop), group)
    attn.num_heads, attn.num_kv_heads = len(heads), len(kv)


@torch.no_grad()
def shard_model(model: MiniMaxForCausalLM, layout: ShardLayout, group: ProcessGroup | None) -> MiniMaxForCausalLM:
    """Cut `model` (built for `layout.config`, on the meta device or with weights) to the part `layout` names, in
    place; `group` is the tensor-parallel process group (None for one process). Returns the model; a group of one
    keeps it whole, as it is."""
    if model.config != layout.config:
        raise ValueError("the layout was made for another config")
    if layout.size == 1:
        return model
    vocab, rows = layout.vocab, layout.vocab_rows
    embed = model.model.embed_tokens.weight.data
    model.model.embed_tokens = VocabParallelEmbedding(_rows(embed, 0, vocab.start, vocab.stop, rows), vocab, group)
    head = _rows(model.lm_head.weight.data, 0, vocab.start, vocab.stop, rows)
    model.lm_head = ParallelLMHead(head, layout.config.vocab_size, group)
    for layer in model.model.layers:
        if isinstance(layer.self_attn, LightningAttention):
            _shard_lightning(layer.self_attn, layout, group)
        else:
            _shard_softmax(layer.self_attn, layout, group)
        layer.block_sparse_moe = ExpertParallelMoE(layer.block_sparse_moe, layout, group)
    model.cache_config = layout.local_config()
    return model
