"""ByteTokenizer: lossless for any Unicode text, special ids outside the byte range."""

from __future__ import annotations

import pytest

from mmx.model import ByteTokenizer


@pytest.mark.parametrize(
    "text", ["", "plain ascii", "naïve café", "日本語のテキスト", "emoji 🧪🚀", "\x00\n\t\U0010ffff"]
)
def test_round_trip(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_special_ids_are_dropped_and_cut_characters_replaced() -> None:
    tok = ByteTokenizer()
    assert {tok.pad_id, tok.bos_id, tok.eos_id} == {256, 257, 258} and tok.vocab_size == 259
    assert tok.decode([tok.bos_id, *tok.encode("hi"), tok.eos_id, tok.pad_id]) == "hi"
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"
