"""Needles at their intended depths, determinism, and distractors that never collide with an answer."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mmx.errors import MmxError
from mmx.tasks import get_task
from mmx.tasks.kamradt import depth_grid


def test_depth_grids() -> None:
    assert depth_grid(5, "linear") == [0.0, 25.0, 50.0, 75.0, 100.0]
    sigmoid = depth_grid(9, "sigmoid")
    assert sigmoid[0] == 0.0 and sigmoid[-1] == 100.0 and sigmoid == sorted(sigmoid)
    steps = [b - a for a, b in zip(sigmoid, sigmoid[1:], strict=False)]
    assert steps[0] < steps[len(steps) // 2] > steps[-1]  # denser near both ends than in the middle
    assert depth_grid(1, "linear") == [50.0]


@pytest.mark.parametrize("spacing", ["linear", "sigmoid"])
def test_kamradt_needle_at_depth(spacing: str, byte_tok: object) -> None:
    """Sample i sits at depth index i % depths, at or just before depth% of the haystack, after a sentence end."""
    task = get_task("niah", depths=5, spacing=spacing)
    length = 32768
    for index in range(6):
        sample = task.sample(byte_tok, length, index)
        depth = depth_grid(5, spacing)[index % 5]
        assert sample.metadata["depth"] == depth and sample.metadata["depth_index"] == index % 5
        needle = re.search(r"The best thing to do in \w+ is to [^.]+\.", sample.prompt)
        start = sample.prompt.index("\n\n") + 2  # the haystack follows the instruction's blank line
        end = sample.prompt.rindex("\n\nQuestion:")
        haystack = len(sample.prompt[start:end].encode()) - len(needle.group(0).encode()) - 1
        placed = 100 * len(sample.prompt[start : needle.start()].encode()) / haystack
        assert depth - 1.0 <= placed <= depth + 0.01, (depth, placed)  # moved back by at most a sentence
        assert sample.metadata["placed_depth"] == pytest.approx(placed, abs=0.05)
        before = sample.prompt[: needle.start()].rstrip()
        assert needle.start() == start or before.endswith((".", "?", "!", '"'))


def test_ruler_needles_at_depth(byte_tok: object) -> None:
    """RULER needles go on the 40-point depth grid; token offsets in the metadata match the text."""
    for name, opening in (("niah_single_1", 1), ("niah_single_2", 0), ("niah_multikey_1", 0), ("niah_multikey_2", 1)):
        sample = get_task(name).sample(byte_tok, 65536, 3)
        head = sample.prompt.index("after the text.") + len("after the text.") + opening  # line haystacks open "\n"
        for depth, offset in zip(sample.metadata["depths"], sample.metadata["needle_offsets"], strict=True):
            assert abs(depth * 39 / 100 - round(depth * 39 / 100)) < 0.01  # one of the 40 grid points (2 decimals)
            text = sample.prompt.encode()[head + offset :].decode(errors="ignore")
            assert text.lstrip().startswith("One of the special magic"), text[:80]
            assert depth - 1.0 <= 100 * offset / sample.metadata["haystack_tokens"] <= depth + 0.5


def test_same_inputs_same_prompt_different_indices_different_needles(tokenizer: object) -> None:
    for name in ("niah_single_1", "niah_multikey_3", "vt", "cwe", "fwe", "qa_2", "niah"):
        first = get_task(name).sample(tokenizer, 4096, 2, seed=11)
        again = get_task(name).sample(tokenizer, 4096, 2, seed=11)  # a fresh task object, same inputs
        assert (first.prompt, first.answer_prefix, first.references) == (
            again.prompt,
            again.answer_prefix,
            again.references,
        )
        others = [get_task(name).sample(tokenizer, 4096, i, seed=11).references for i in (0, 1, 3)]
        assert all(refs != first.references for refs in others)
        assert get_task(name).sample(tokenizer, 4096, 2, seed=12).references != first.references


def test_prompts_are_identical_across_processes() -> None:
    """No dependence on hash randomization or process state: a child process builds the same prompt."""
    code = (  # a bytes tokenizer written out, so the child does not import mmx.model (and torch)
        "from mmx.tasks import get_task\n"
        "class Bytes:\n    encode = staticmethod(lambda text: list(text.encode()))\n"
        "print(get_task('niah_single_2').sample(Bytes(), 8192, 4, seed=3).prompt_hash)"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from mmx.model import ByteTokenizer

    assert child.stdout.strip() == get_task("niah_single_2").sample(ByteTokenizer(), 8192, 4, seed=3).prompt_hash


@pytest.mark.parametrize("name", ["niah_multikey_2", "niah_multikey_3"])
def test_distractor_needles_never_collide(name: str, tokenizer: object) -> None:
    sample = get_task(name).sample(tokenizer, 65536, 5)
    kind = "uuids" if name.endswith("3") else "numbers"
    needles = re.findall(rf"One of the special magic {kind} for (\S+) is: (\S+)\.", sample.prompt)
    keys = [k for k, _ in needles]
    assert len(needles) > 100 and len(set(keys)) == len(keys)  # every line a distinct key
    query = re.search(r"magic \w+ for (\S+) in the text above", sample.prompt).group(1)
    assert keys.count(query) == 1
    values = [v for _, v in needles]
    assert all(values.count(ref) == 1 for ref in sample.references)


def test_multikey_distractors_differ_from_answer(byte_tok: object) -> None:
    sample = get_task("niah_multikey_1").sample(byte_tok, 16384, 0)
    needles = re.findall(r"One of the special magic numbers for (\S+) is: (\d+)\.", sample.prompt)
    assert len(needles) == 4 and len({k for k, _ in needles}) == 4 and len({v for _, v in needles}) == 4


def test_cwe_uncommon_words_never_contain_an_answer(byte_tok: object) -> None:
    sample = get_task("cwe").sample(byte_tok, 262144, 1)  # long enough to need compound words
    listed = re.findall(r"\d+\. (\w+)", sample.prompt.split("Now the real list:")[1])
    uncommon = set(listed) - set(sample.references)
    assert sample.metadata["uncommon_words"] == len(uncommon) > 1500
    assert not [w for w in uncommon for ref in sample.references if ref in w]
    example = set(re.findall(r"\d+\. (\w+)", sample.prompt.split("Now the real list:")[0]))
    assert not example & set(listed)


def test_vt_example_does_not_leak_into_the_answer(byte_tok: object) -> None:
    sample = get_task("vt").sample(byte_tok, 8192, 0)
    example, real = sample.prompt.split("Now the real text.")
    assert not set(re.findall(r"VAR ([A-Z]{5})", example)) & set(sample.references)
    assert set(re.findall(r"VAR ([A-Z]{5})", real)) == set(sample.references)


@pytest.mark.parametrize("name", ["qa_1", "qa_2"])
def test_synthetic_qa_distractors_never_contain_the_answer(name: str, byte_tok: object) -> None:
    sample = get_task(name).sample(byte_tok, 32768, 2)
    docs = sample.prompt.split("\n\nDocument ")[1:]
    gold = {i - 1 for i in sample.metadata["gold_documents"]}
    answer = sample.references[0].casefold()
    assert all(answer not in doc.casefold() for i, doc in enumerate(docs) if i not in gold)
    assert any(answer in docs[i].casefold() for i in gold)


def test_custom_needle(byte_tok: object) -> None:
    task = get_task(
        "niah", needle="The secret ingredient is smoked paprika.", question="What is the secret ingredient?",
        answer="smoked paprika", depths=3,
    )  # fmt: skip
    sample = task.sample(byte_tok, 8192, 1)
    assert "The secret ingredient is smoked paprika." in sample.prompt
    assert sample.references == ["smoked paprika"]
    assert task.score(sample, "Smoked Paprika!") == 1.0
    with pytest.raises(MmxError, match="together"):
        get_task("niah", needle="A needle.")
    with pytest.raises(MmxError, match="does not occur"):
        get_task("niah", needle="A needle.", question="What?", answer="haystack")
