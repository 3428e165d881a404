"""Tokenizers for the task tests: the byte tokenizer, and a byte-level BPE trained here on the built-in prose.

The BPE is trained in a couple of seconds from text mmx generates itself (essays, needles, uuids, variable names,
coded words), so tests exercise a real subword tokenizer whose piece counts do not match character counts, offline.
"""

from __future__ import annotations

import random
import string
import uuid

import pytest

from mmx.model import ByteTokenizer

BPE_VOCAB = 2000


class BpeTokenizer:
    """A `tokenizers.Tokenizer` behind the encode/decode protocol (no special tokens)."""

    def __init__(self, tok: object) -> None:
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def training_text() -> list[str]:
    """Prose from the built-in corpus plus the odd strings tasks print (numbers, uuids, capitals, coded words)."""
    from mmx.tasks.corpus import builtin_corpus

    rng = random.Random(0)
    sentences = list(builtin_corpus().sentences[:4000])
    odd = [
        f"{rng.randint(10**6, 10**7)} {uuid.UUID(int=rng.getrandbits(128))} VAR "
        + "".join(rng.choices(string.ascii_uppercase, k=5))
        + " "
        + "".join(rng.choices(string.ascii_lowercase, k=6))
        for _ in range(2000)
    ]
    return sentences + odd


def train_bpe(vocab_size: int) -> BpeTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(training_text(), trainer)
    return BpeTokenizer(tok)


@pytest.fixture(scope="session")
def byte_tok() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture(scope="session")
def bpe_tok() -> BpeTokenizer:
    return train_bpe(BPE_VOCAB)


@pytest.fixture(scope="session", params=["byte", "bpe"])
def tokenizer(request: pytest.FixtureRequest, byte_tok: ByteTokenizer, bpe_tok: BpeTokenizer) -> object:
    return byte_tok if request.param == "byte" else bpe_tok
