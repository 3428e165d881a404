"""Data packing: whole documents laid end to end in fixed-length rows, with `cu_seqlens` marking every boundary.

A document is never split, so the answer at its end always sees its whole prompt. Rows are filled first-fit from a
short look-ahead window of the document stream; what a row cannot use is a padding segment that carries no loss. The
packer's state (next document index, documents waiting in the window) is small and saved in every checkpoint, so a
resumed run builds exactly the rows it would have built.

Each document's segment is padded (after its EOS, no loss) to a multiple of `align` tokens. Attention kernels that
build a plan per sequence length (cuDNN's SDPA on Hopper does) then meet a few dozen lengths instead of a new one for
nearly every document; the padding cannot change the document's own outputs, since everything runs forward in time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE = -100  # label of positions that predict nothing (a document's last token, padding)


@dataclass(frozen=True)
class Document:
    """Token ids of one training document; targets from `answer_start` on are the answer (weighted separately)."""

    tokens: list[int]
    answer_start: int

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class PackedBatch:
    """`rows` rows of `seq_len` tokens, flattened into one packed sequence (B = 1) for the varlen model path.

    input_ids, labels, weights, answer: [1, rows * seq_len] (`answer` marks targets that are answer tokens);
    cu_seqlens: int32 [segments + 1], documents and padding alike.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    answer: torch.Tensor
    cu_seqlens: torch.Tensor
    documents: int
    padding: int

    @property
    def tokens(self) -> int:
        return self.input_ids.shape[1]

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.weights.to(device, non_blocking=True),
            self.answer.to(device, non_blocking=True),
            self.cu_seqlens.to(device, non_blocking=True),
            self.documents,
            self.padding,
        )


def document_targets(doc: Document, context_weight: float) -> tuple[list[int], list[float], list[bool]]:
    """Next-token labels, loss weights and answer flags for one document: the last position predicts nothing."""
    labels = doc.tokens[1:] + [IGNORE]
    answer = [t + 1 >= doc.answer_start for t in range(len(doc.tokens) - 1)] + [False]
    weights = [1.0 if a else context_weight for a in answer[:-1]] + [0.0]
    return labels, weights, answer


def aligned(n: int, align: int) -> int:
    """`n` rounded up to a multiple of `align`."""
    return -(-n // align) * align


def pack_rows(
    rows: list[list[Document]], seq_len: int, pad_id: int, context_weight: float, align: int = 1
) -> PackedBatch:
    """Lay out rows of documents (aligned total ≤ seq_len) into one packed batch, padding each row's tail."""
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    answer: list[bool] = []
    bounds = [0]
    n_docs = padding = 0
    for row in rows:
        used = 0
        for doc in row:
            doc_labels, doc_weights, doc_answer = document_targets(doc, context_weight)
            fill = aligned(len(doc), align) - len(doc)
            padding += fill
            ids += doc.tokens + [pad_id] * fill
            labels += doc_labels + [IGNORE] * fill
            weights += doc_weights + [0.0] * fill
            answer += doc_answer + [False] * fill
            used += len(doc) + fill
            bounds.append(len(ids))
            n_docs += 1
        if used > seq_len:
            raise ValueError(f"a row holds {used} tokens, more than seq_len={seq_len}")
        if used < seq_len:  # the padding is a segment of its own, so it never touches a document's state
            pad = seq_len - used
            padding += pad
            ids += [pad_id] * pad
            labels += [IGNORE] * pad
            weights += [0.0] * pad
            answer += [False] * pad
            bounds.append(len(ids))
    return PackedBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        labels=torch.tensor([labels], dtype=torch.long),
        weights=torch.tensor([weights], dtype=torch.float32),
        answer=torch.tensor([answer], dtype=torch.bool),
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
        documents=n_docs,
        padding=padding,
    )


class Packer:
    """Builds rows from documents fetched by index, first-fit within a window of `lookahead` waiting documents."""

    def __init__(
        self,
        fetch: Callable[[list[int]], list[Document]],
        seq_len: int,
        lookahead: int = 8,
        next_index: int = 0,
        waiting: list[int] | None = None,
        align: int = 1,
    ) -> None:
        self.fetch = fetch
        self.seq_len = seq_len
        self.lookahead = lookahead
        self.align = align
        self.next_index = next_index
        waiting = list(waiting or [])
        self._window: list[tuple[int, Document]] = list(zip(waiting, fetch(waiting), strict=True)) if waiting else []

    def state(self) -> dict[str, object]:
        """What a checkpoint needs to rebuild this packer exactly."""
        return {"next_index": self.next_index, "waiting": [i for i, _ in self._window]}

    def _refill(self) -> None:
        need = self.lookahead - len(self._window)
        if need <= 0:
            return
        indices = list(range(self.next_index, self.next_index + need))
        for i, doc in zip(indices, self.fetch(indices), strict=True):
            if aligned(len(doc), self.align) > self.seq_len:
                raise ValueError(f"document {i} has {len(doc)} tokens, more than a row of {self.seq_len} can hold")
            self._window.append((i, doc))
        self.next_index += need

    def row(self) -> list[Document]:
        """The next row: the oldest waiting document first, then the first of the window that fits, until none does."""
        space = self.seq_len
        row: list[Document] = []
        while True:
            self._refill()
            pick = next((j for j, (_, d) in enumerate(self._window) if aligned(len(d), self.align) <= space), None)
            if pick is None:
                return row
            _, doc = self._window.pop(pick)
            row.append(doc)
            space -= aligned(len(doc), self.align)

    def batch(self, rows: int, pad_id: int, context_weight: float) -> PackedBatch:
        """`rows` rows packed into one batch."""
        return pack_rows([self.row() for _ in range(rows)], self.seq_len, pad_id, context_weight, self.align)
