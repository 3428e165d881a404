"""Every task is solvable from its own prompt, at every tested length, and every prompt lands on its target length.

A small rule-based oracle reads each prompt the way a perfect model would (regexes and counting, never the sample's
references) and must score 100. This proves needles, chains, word counts and gold documents are really in the text,
and that distractors never produce a second answer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from functools import cache

import pytest

from mmx.tasks import RULER_TASKS, Sample, get_task
from mmx.tasks.fit import tolerance


def _between(text: str, start: str, end: str) -> str:
    return text[text.rindex(start) + len(start) : text.rindex(end)]


def oracle_niah(prompt: str) -> str:
    kind, keys = re.search(r"special magic (\w+) for (.+) in the text above\?\n", prompt).groups()
    found = []
    for key in re.split(r", | and ", keys):
        found += re.findall(rf"One of the special magic {kind} for {re.escape(key)} is: (\S+)\.", prompt)
    return " ".join(found)


def oracle_vt(prompt: str) -> str:
    value = re.search(r"Which variables hold the value (\d+) in the text above\?\n$", prompt).group(1)
    text = _between(prompt, "Now the real text.", "\n\nQuestion:")
    holders, changed = set(), True
    assignments = re.findall(r"VAR ([A-Z]{5}) = (\d{5}|VAR [A-Z]{5})\.", text)
    while changed:
        before = len(holders)
        holders |= {name for name, source in assignments if source == value or source[4:] in holders}
        changed = len(holders) > before
    return " ".join(sorted(holders))


def oracle_cwe(prompt: str) -> str:
    words = re.findall(r"\d+\. (\w+)", _between(prompt, "Now the real list:", "\n\nQuestion:"))
    return " ".join(w for w, _ in Counter(words).most_common(10))


def oracle_fwe(prompt: str) -> str:
    words = _between(prompt, "Text:", "\n\nQuestion:").split()
    return " ".join(w for w, _ in Counter(w for w in words if w != "...").most_common(3))


def oracle_synthetic_qa(prompt: str) -> str:
    question = re.search(r"Question: (.+)\n$", prompt).group(1)
    person = r"([A-Z]\w+ [A-Z]\. [A-Z]\w+)"
    if founder := re.search(r"the founder of the (.+) born\?", question):
        name = re.search(rf"The {re.escape(founder.group(1))} was founded in \d+ by {person}\.", prompt).group(1)
        question = f"In which town was {name} born?"
    name = re.search(rf"(?:was|of|does) {person}", question).group(1)
    doc = next(d for d in prompt.split("\n\nDocument ") if f"\n{name} was born in " in d)
    town, year = re.search(rf"{re.escape(name)} was born in (\w+) in (\d+)\.", doc).groups()
    if "which town" in question:
        return town
    if "which year" in question:
        return year
    if "profession" in question:
        return re.search(r"(?:works as|is) an? ([a-z ]+)\.", doc).group(1)
    return re.search(r"plays the (\w+)\.", doc).group(1)


def oracle_kamradt(prompt: str) -> str:
    town = re.search(r"Question: What is the best thing to do in (\w+)\?\n$", prompt).group(1)
    return re.search(rf"The best thing to do in {town} is to (.+?)\.", prompt).group(1)


ORACLES: dict[str, Callable[[str], str]] = {
    **{name: oracle_niah for name in RULER_TASKS if name.startswith("niah_")},
    "vt": oracle_vt,
    "cwe": oracle_cwe,
    "fwe": oracle_fwe,
    "qa_1": oracle_synthetic_qa,  # offline: the synthetic stand-ins run in qa_1/qa_2's place
    "qa_2": oracle_synthetic_qa,
    "niah": oracle_kamradt,
}
LENGTHS = {"byte": [2048, 8192, 131072, 1 << 20], "bpe": [1024, 8192, 131072]}


@cache
def built(name: str, tokenizer: object, length: int, index: int = 0) -> Sample:
    return get_task(name).sample(tokenizer, length, index, seed=7)


def cases() -> list[tuple[str, str, int]]:
    return [(name, tok, n) for name in ORACLES for tok, lengths in LENGTHS.items() for n in lengths]


@pytest.fixture
def tokenizers(byte_tok: object, bpe_tok: object) -> dict[str, object]:
    return {"byte": byte_tok, "bpe": bpe_tok}


@pytest.mark.parametrize(("name", "tok", "length"), cases(), ids=lambda v: str(v))
def test_length_is_exact(name: str, tok: str, length: int, tokenizers: dict[str, object]) -> None:
    tokenizer = tokenizers[tok]
    sample = built(name, tokenizer, length)
    used = len(tokenizer.encode(sample.prompt + sample.answer_prefix)) + sample.max_new_tokens
    assert length - tolerance(length) <= used <= length
    assert sample.metadata["prompt_tokens"] + sample.max_new_tokens == used


@pytest.mark.parametrize(("name", "tok", "length"), cases(), ids=lambda v: str(v))
def test_oracle_scores_100(name: str, tok: str, length: int, tokenizers: dict[str, object]) -> None:
    sample = built(name, tokenizers[tok], length)
    prediction = ORACLES[name](sample.prompt + "\n" if not sample.prompt.endswith("\n") else sample.prompt)
    assert get_task(name).score(sample, prediction) == 1.0, (prediction, sample.references)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["niah_single_1", "niah_multikey_3", "cwe", "fwe", "qa_2"])
def test_four_million_tokens(name: str, byte_tok: object) -> None:
    """The top of the range: 4M byte tokens, exact, and still solvable."""
    length = 4 << 20
    sample = get_task(name).sample(byte_tok, length, 1)
    used = len(byte_tok.encode(sample.prompt + sample.answer_prefix)) + sample.max_new_tokens
    assert length - tolerance(length) <= used <= length
    assert get_task(name).score(sample, ORACLES[name](sample.prompt)) == 1.0
