"""Packing: layout of packed rows, resumable first-fit, and the loss on a packed row equals the documents' own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmx.model.config import MiniMaxConfig
from mmx.model.modeling import MiniMaxForCausalLM
from mmx.workflows.train.loss import packed_loss
from mmx.workflows.train.packing import IGNORE, Document, Packer, pack_rows

PAD = 256


def _doc(n: int, answer: int, seed: int) -> Document:
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(0, 256, (n,), generator=g).tolist()
    return Document([257, *body, 258], answer_start=n + 2 - answer)


def test_rows_are_laid_out_with_boundaries_labels_and_padding() -> None:
    a, b, c = _doc(3, 2, 0), _doc(4, 1, 1), _doc(2, 1, 2)
    batch = pack_rows([[a, b], [c]], seq_len=12, pad_id=PAD, context_weight=0.25)
    assert batch.input_ids.shape == (1, 24)
    # row 1: a (5) + b (6) + 1 padding; row 2: c (4) + 8 padding
    assert batch.cu_seqlens.tolist() == [0, 5, 11, 12, 16, 24]
    assert batch.documents == 3 and batch.padding == 9
    labels = batch.labels[0].tolist()
    assert labels[:5] == a.tokens[1:] + [IGNORE]  # a document's last token predicts nothing
    assert labels[11] == IGNORE and batch.input_ids[0, 11] == PAD
    weights = batch.weights[0].tolist()
    # a = [BOS, x, x, x, EOS] with the answer = its last 2 tokens: targets 3 and 4 weigh 1, earlier ones 0.25
    assert weights[:5] == [0.25, 0.25, 1.0, 1.0, 0.0]
    assert batch.answer[0, :5].tolist() == [False, False, True, True, False]
    assert sum(weights[16:]) == 0


def test_documents_are_padded_to_the_alignment_inside_their_own_segment() -> None:
    a, b = _doc(3, 2, 0), _doc(9, 1, 1)  # 5 and 11 tokens
    batch = pack_rows([[a, b]], seq_len=24, pad_id=PAD, context_weight=1.0, align=8)
    assert batch.cu_seqlens.tolist() == [0, 8, 24]  # 5 -> 8, 11 -> 16: the row is full, no tail segment
    assert batch.input_ids[0, 5:8].tolist() == [PAD] * 3 and batch.labels[0, 4:8].tolist() == [IGNORE] * 4
    assert batch.weights[0, 4:8].sum() == 0 and batch.padding == 8
    packer = Packer(_fetcher([3, 9, 3]), seq_len=16, lookahead=3, align=8)
    assert [len(d) for d in packer.row()] == [5, 5]  # 8 + 8; the 11-token document needs a whole row of 16


def test_overfull_row_is_refused() -> None:
    with pytest.raises(ValueError, match="more than seq_len"):
        pack_rows([[_doc(10, 1, 0), _doc(10, 1, 1)]], seq_len=16, pad_id=PAD, context_weight=1.0)


def _fetcher(lengths: list[int]):
    def fetch(indices: list[int]) -> list[Document]:
        return [_doc(lengths[i % len(lengths)], 1, i) for i in indices]

    return fetch


def test_first_fit_fills_rows_and_keeps_stream_order_for_the_oldest() -> None:
    packer = Packer(_fetcher([10, 3, 9, 2, 1]), seq_len=16, lookahead=4)
    row = packer.row()
    # doc 0 (12 tokens) first, then doc 1 (5) does not fit the 4 left, doc 3 (4) does
    assert [len(d) for d in row] == [12, 4]
    assert [len(d) for d in packer.row()] == [5, 11]  # doc 1 first: the oldest waiting document always leads


def test_packer_state_rebuilds_the_same_rows() -> None:
    lengths = [10, 3, 9, 2, 1, 14, 6]
    straight = Packer(_fetcher(lengths), seq_len=16, lookahead=3)
    rows = [straight.row() for _ in range(6)]
    first = Packer(_fetcher(lengths), seq_len=16, lookahead=3)
    for _ in range(3):
        first.row()
    state = first.state()
    resumed = Packer(
        _fetcher(lengths), seq_len=16, lookahead=3, next_index=state["next_index"], waiting=state["waiting"]
    )
    assert [[d.tokens for d in resumed.row()] for _ in range(3)] == [[d.tokens for d in r] for r in rows[3:]]


def test_document_longer_than_a_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than a row"):
        Packer(_fetcher([40]), seq_len=16).row()


def test_packed_loss_equals_documents_run_separately() -> None:
    torch.manual_seed(0)
    model = MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny")).eval()
    docs = [_doc(n, 4, i) for i, n in enumerate((37, 90, 5, 120, 61))]
    batch = pack_rows([docs[:2], docs[2:4], docs[4:]], seq_len=160, pad_id=PAD, context_weight=0.3, align=16)
    with torch.no_grad():
        packed = packed_loss(model, batch)
        separate, weight = 0.0, 0.0
        for doc in docs:
            alone = pack_rows([[doc]], seq_len=len(doc), pad_id=PAD, context_weight=0.3)
            logits = model(alone.input_ids)  # no cu_seqlens: a plain causal forward
            nll = F.cross_entropy(logits[0], alone.labels[0], ignore_index=IGNORE, reduction="none")
            separate += float((nll * alone.weights[0]).sum())
            weight += float(alone.weights.sum())
    assert packed.weight == pytest.approx(weight)
    assert float(packed.weighted_nll) == pytest.approx(separate, rel=1e-5)
    assert packed.answer_tokens == 5 * 4  # the last 4 tokens (EOS included), each predicted by the one before
