"""The fitting machinery: prefix cutting, and exact lengths even when piece counts do not add up."""

from __future__ import annotations

import pytest

from mmx.tasks import get_task
from mmx.tasks.fit import longest_prefix, tolerance


def chars(text: str) -> int:
    return len(text)


def test_tolerance() -> None:
    assert tolerance(1024) == 32 and tolerance(131072) == 32 and tolerance(1 << 20) == 104
    assert tolerance(4 << 20) == 419


def test_longest_prefix_prefers_word_boundaries() -> None:
    text = " alpha beta gamma delta"
    assert longest_prefix(text, 13, chars, slack=4) == " alpha beta"  # 11 chars; 2 unused < slack
    assert longest_prefix(text, 13, chars, slack=2) == " alpha beta g"  # a word cut fills it when the gap is large
    assert longest_prefix(text, 100, chars, slack=4) == text
    assert longest_prefix(text, 0, chars, slack=4) == ""
    assert longest_prefix(" ", 5, chars, slack=4) == ""
    assert longest_prefix(" supercalifragilistic", 8, chars, slack=4) == " superca"  # no word fits: characters


class PrefixTokenizer:
    """Adds a marker token to every encode, like tokenizers that prepend a space symbol: piece counts overshoot."""

    def encode(self, text: str) -> list[int]:
        return [0, *text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i).decode(errors="replace")


class WordTokenizer:
    """One token per whitespace-separated word (and one per run of newlines): nothing like characters."""

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.replace("\n", " \n ").split(" ") if w]

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError


@pytest.mark.parametrize("tokenizer", [PrefixTokenizer(), WordTokenizer()], ids=["prefix", "words"])
@pytest.mark.parametrize("name", ["niah_single_1", "niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe", "qa_2"])
def test_lengths_hold_when_counts_do_not_add_up(name: str, tokenizer: object) -> None:
    """The measured error moves the aim and the prompt is redrafted from the same random state until it fits."""
    for length in (4096, 65536):
        sample = get_task(name).sample(tokenizer, length, 0)
        used = len(tokenizer.encode(sample.prompt + sample.answer_prefix)) + sample.max_new_tokens
        assert length - tolerance(length) <= used <= length


def test_answer_prefix_off_still_exact(byte_tok: object) -> None:
    with_prefix = get_task("niah_single_2").sample(byte_tok, 8192, 0)
    without = get_task("niah_single_2", answer_prefix=False).sample(byte_tok, 8192, 0)
    assert without.answer_prefix == "" and with_prefix.answer_prefix.startswith("Answer:")
    assert 8192 - 32 <= len(byte_tok.encode(without.prompt)) + without.max_new_tokens <= 8192
    assert without.references == with_prefix.references


def test_max_new_tokens_option_changes_the_budget(byte_tok: object) -> None:
    sample = get_task("vt", max_new_tokens=100).sample(byte_tok, 8192, 0)
    assert sample.max_new_tokens == 100
    assert 8192 - 32 <= len(byte_tok.encode(sample.text)) + 100 <= 8192
