"""Training documents: deterministic by index, within the row, answer last, and never an evaluation prompt."""

from __future__ import annotations

import random
import re

import pytest

from mmx.errors import MmxError
from mmx.model.tokenizer import ByteTokenizer
from mmx.tasks import RULER_TASKS, get_task
from mmx.workflows.train.data import TRAIN_SEED_BASE, DataMix, DocumentStream, make_document, parse_mix
from mmx.workflows.train.drill import drill_document
from mmx.workflows.train.recall import recall_document

TOK = ByteTokenizer()


def test_mix_expands_suites_and_weights() -> None:
    mix = parse_mix("ruler,niah=2,recall,drill", min_len=1024)
    assert set(mix.weights) == {*RULER_TASKS, "niah", "recall", "drill"}
    assert mix.weights["vt"] == pytest.approx(1 / 13) and mix.weights["niah"] == 2.0
    with pytest.raises(MmxError, match="unknown task"):
        parse_mix("niah_single_9", 1024)
    with pytest.raises(MmxError, match="must be a positive number"):
        parse_mix("vt=0", 1024)


def test_documents_are_a_pure_function_of_their_index_and_fit_the_row() -> None:
    mix = parse_mix("ruler,niah,recall", min_len=1024)
    docs = [make_document(mix, 7, i, max_len=4094) for i in range(40)]
    assert [d.tokens for d in docs] == [make_document(mix, 7, i, 4094).tokens for i in range(40)]
    assert all(len(d) <= 4096 and d.tokens[0] == TOK.bos_id and d.tokens[-1] == TOK.eos_id for d in docs)
    assert all(0 < d.answer_start < len(d) - 1 for d in docs)
    assert len({tuple(d.tokens) for d in docs}) == 40


def test_the_answer_follows_the_prompt_and_answer_prefix() -> None:
    mix = DataMix({"niah_single_1": 1.0}, min_len=2048)
    doc = make_document(mix, 0, 3, max_len=2048)
    text = TOK.decode(doc.tokens)
    answer = TOK.decode(doc.tokens[doc.answer_start :])
    assert answer.startswith(" ") and answer.endswith(".")
    number = answer.strip(" .")
    assert number.isdigit() and text.count(number) == 2  # the needle in the haystack, and the answer


def test_training_prompts_are_not_evaluation_prompts() -> None:
    task = get_task("niah_single_1")
    mix = DataMix({"niah_single_1": 1.0}, min_len=1024)
    train = {TOK.decode(make_document(mix, 0, i, 1024).tokens[1:]) for i in range(8)}
    for seed in (0, 1, 42):
        for sample in task.samples(TOK, 1024, 8, seed):
            assert not any(t.startswith(sample.prompt) for t in train)
    assert TRAIN_SEED_BASE > 2**32


def test_worker_processes_produce_the_same_documents() -> None:
    mix = DataMix({"niah_single_1": 1.0, "recall": 1.0}, min_len=600)
    local, pooled = DocumentStream(mix, 3, workers=0), DocumentStream(mix, 3, workers=1, prefetch=2)
    try:
        indices = list(range(5, 25))
        assert [d.tokens for d in pooled.fetcher(1024)(indices)] == [d.tokens for d in local.fetcher(1024)(indices)]
    finally:
        pooled.close()


def test_recall_documents_ask_back_every_pair_after_the_context() -> None:
    doc = recall_document(random.Random(0), 800, TOK.bos_id, TOK.eos_id)
    assert len(doc) <= 802
    context = TOK.decode(doc.tokens[: doc.answer_start])
    asked = TOK.decode(doc.tokens[doc.answer_start :]).splitlines()
    stored = context.split("\n", 1)[1].rsplit("\nRecall:", 1)[0].splitlines()
    assert sorted(asked) == sorted(stored) and len(asked) >= 10
    assert asked != stored  # asked back in another order


def test_drills_ask_in_the_niah_wording_and_answer_with_the_needles_values() -> None:
    from mmx.tasks.niah import ANSWER_PREFIX, QUESTION

    slot = {r"\{kind\}": r"(\w+)", r"\{keys\}": "(.+?)"}
    question, prefix = re.escape(QUESTION), re.escape(ANSWER_PREFIX)
    for name, group in slot.items():
        question, prefix = question.replace(name, group), prefix.replace(name, group.strip("()"))
    pattern = re.compile(question + prefix + r" (.+?)\.(?=\n\nQuestion|$)")
    needle = re.compile(r"One of the special magic (\w+) for (\S+) is: (\S+)\.")
    for seed in range(12):
        doc = drill_document(random.Random(seed), 3000, TOK.bos_id, TOK.eos_id)
        assert len(doc) <= 3002 and doc.tokens[-1] == TOK.eos_id
        context = TOK.decode(doc.tokens[1 : doc.answer_start])
        held: dict[str, list[str]] = {}
        for _, key, value in needle.findall(context):
            held.setdefault(key, []).append(value)
        rounds = pattern.findall(TOK.decode(doc.tokens[doc.answer_start : -1]))
        assert rounds, "a drill asks at least one question"
        asked = [key for _, keys, _ in rounds for key in re.split(r", | and ", keys)]
        assert len(asked) == len(set(asked))  # each key once
        for _, keys, answer in rounds:
            expected = [v for key in re.split(r", | and ", keys) for v in held[key]]
            assert answer.split(", ") == expected
