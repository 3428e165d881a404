"""The training objective on a packed batch: weighted next-token cross-entropy, summed so micro-batches add up."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmx.workflows.train.packing import IGNORE, PackedBatch


@dataclass
class LossParts:
    """Sums over one packed batch; divide by `weight` (or `answer_tokens`) once every micro-batch is in."""

    weighted_nll: torch.Tensor  # differentiable
    weight: float
    answer_nll: float
    answer_tokens: int
    answer_correct: int


def packed_loss(model: torch.nn.Module, batch: PackedBatch) -> LossParts:
    """Run the model once over the packed row (documents isolated by `cu_seqlens`) and sum the weighted losses."""
    logits = model(batch.input_ids, cu_seqlens=batch.cu_seqlens)  # [1, T, V]
    vocab = logits.shape[-1]
    labels = batch.labels.view(-1)  # [T]
    nll = F.cross_entropy(logits.view(-1, vocab).float(), labels, ignore_index=IGNORE, reduction="none")  # [T]
    answer = batch.answer.view(-1)  # [T]
    with torch.no_grad():
        correct = (logits.view(-1, vocab).argmax(-1) == labels) & answer
        answer_nll = nll.detach()[answer].sum()
    return LossParts(
        weighted_nll=(nll * batch.weights.view(-1)).sum(),
        weight=float(batch.weights.sum()),
        answer_nll=float(answer_nll),
        answer_tokens=int(answer.sum()),
        answer_correct=int(correct.sum()),
    )
