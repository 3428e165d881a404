"""Bad input is one clear MmxError; user corpora and local QA files are read, hashed and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmx.errors import MmxError
from mmx.tasks import SUITES, get_task, list_tasks, task_options
from mmx.tasks.corpus import load_corpus, split_text


def test_registry_and_suites() -> None:
    assert len(SUITES["ruler"]) == 13 and SUITES["niah"] == ["niah"]
    assert set(SUITES["ruler"]) <= set(list_tasks())
    assert {"corpus", "answer_prefix", "max_new_tokens"} <= set(task_options("niah_single_2"))
    assert {"depths", "spacing", "needle", "question", "answer"} <= set(task_options("niah"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: get_task("niah_single_9"), "unknown task"),
        (lambda: get_task("vt", colour="red"), "no option colour"),
        (lambda: get_task("niah", spacing="cubic"), "spacing"),
        (lambda: get_task("niah", depths=0), "depths"),
        (lambda: get_task("vt", max_new_tokens=0), "max_new_tokens"),
        (lambda: get_task("niah_single_2", corpus="/no/such/corpus.txt"), "does not exist"),
        (lambda: get_task("qa_1", data="/no/such/squad.json"), "does not exist"),
        (lambda: get_task("niah", corpus="hf:nobody/no-such-dataset:text"), "not in the local Hugging Face cache"),
    ],
)
def test_bad_options(call: object, message: str) -> None:
    with pytest.raises(MmxError, match=message):
        call()


@pytest.mark.parametrize("name", [*SUITES["ruler"], "niah"])
def test_length_below_a_tasks_minimum(name: str, byte_tok: object) -> None:
    task = get_task(name)
    with pytest.raises(MmxError, match="too short") as err:
        task.sample(byte_tok, 200, 0)
    assert err.value.hint and "at least" in err.value.hint


def test_cwe_minimum_names_the_length_that_works(byte_tok: object) -> None:
    with pytest.raises(MmxError) as err:
        get_task("cwe").sample(byte_tok, 1024, 0)
    needed = int(err.value.hint.split("at least ")[1].split()[0])
    get_task("cwe").sample(byte_tok, needed, 0)  # the length the hint names does work


def test_empty_corpora(tmp_path: Path) -> None:
    empty_file = tmp_path / "empty.txt"
    empty_file.write_text("  \n\n ")
    with pytest.raises(MmxError, match="empty"):
        get_task("niah_single_2", corpus=str(empty_file))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "data.bin").write_bytes(b"\x00")
    with pytest.raises(MmxError, match="no .txt or .md files"):
        get_task("niah", corpus=str(tmp_path / "nothing"))


def test_user_corpus_from_a_directory(tmp_path: Path, byte_tok: object) -> None:
    (tmp_path / "a.txt").write_text("Alpha one went home. Alpha two stayed!\n\nA new paragraph starts here.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("Beta one is short? Beta two is too.")
    corpus = load_corpus(str(tmp_path))
    assert [s.strip() for s in corpus.sentences] == [
        "Alpha one went home.",
        "Alpha two stayed!",
        "A new paragraph starts here.",
        "Beta one is short?",
        "Beta two is too.",
    ]
    task = get_task("niah_single_2", corpus=str(tmp_path))
    assert task.params()["haystack_params"]["corpus_sha256"] == corpus.sha256
    assert (
        task.params()["haystack_params"]["corpus_sha256"]
        != get_task("niah_single_2").params()["haystack_params"]["corpus_sha256"]
    )
    sample = task.sample(byte_tok, 4096, 0)  # a tiny corpus cycles to fill the length
    assert sample.prompt.count("Beta two is too.") > 10
    assert 4096 - 32 <= len(byte_tok.encode(sample.text)) + sample.max_new_tokens <= 4096


def test_split_text_keeps_sentences_and_cuts_runaway_lines() -> None:
    paragraphs = split_text('He said "Go." Then    he left.\nStill here.\n\n\n' + "word " * 400)
    assert paragraphs[0] == ['He said "Go."', "Then he left.", "Still here."]
    assert len(paragraphs[1]) == 2 and all(len(s) <= 1000 for s in paragraphs[1])


def test_builtin_corpus_is_deterministic_and_varied() -> None:
    corpus = load_corpus(None)
    assert corpus.sha256 == load_corpus("builtin").sha256
    words = {w.strip('.,;?!"').lower() for s in corpus.sentences[:3000] for w in s.split()}
    assert len(words) > 1200 and len(set(corpus.sentences)) > 0.9 * len(corpus.sentences)


def _squad(path: Path) -> Path:
    data = {
        "data": [
            {
                "title": "Rivers",
                "paragraphs": [
                    {
                        "context": "The Velda river flows north into the Amber Sea past the town of Korrin.",
                        "qas": [
                            {"question": "Where does the Velda flow?", "answers": [{"text": "the Amber Sea"}]},
                            {"question": "Who owns it?", "answers": [], "is_impossible": True},
                        ],
                    },
                    {
                        "context": "Korrin is famous for its glass bridges, built in 1841.",
                        "qas": [{"question": "When were the bridges built?", "answers": [{"text": "1841"}]}],
                    },
                ],
            }
        ]
    }
    path.write_text(json.dumps(data))
    return path


def test_qa_1_from_a_squad_file(tmp_path: Path, byte_tok: object) -> None:
    task = get_task("qa_1", data=str(_squad(tmp_path / "dev-v2.0.json")))
    assert task.name == "qa_1" and "substitute_for" not in task.params()
    assert task.params()["data"]["questions"] == 2  # the unanswerable one is dropped
    samples = task.samples(byte_tok, 2048, 2, seed=0)
    for sample in samples:
        gold = sample.metadata["gold_documents"][0]
        doc = sample.prompt.split("\n\nDocument ")[gold]
        assert any(ref in doc for ref in sample.references)
        assert 2048 - 32 <= len(byte_tok.encode(sample.text)) + 32 <= 2048
    assert {s.metadata["question"] for s in samples} == {"Where does the Velda flow?", "When were the bridges built?"}


def test_qa_2_from_a_hotpot_file(tmp_path: Path, byte_tok: object) -> None:
    rows = [
        {
            "question": "Which sea does the river of Korrin reach?",
            "answer": "Amber Sea",
            "context": [["Korrin", ["Korrin lies on the Velda."]], ["Velda", ["The Velda reaches the ", "Amber Sea."]],
                        ["Other", ["Nothing to see."]]],
            "supporting_facts": [["Korrin", 0], ["Velda", 0]],
        },
        {"question": "Is it wet?", "answer": "yes", "context": [["A", ["B."]]], "supporting_facts": [["A", 0]]},
    ]  # fmt: skip
    path = tmp_path / "hotpot_dev_distractor_v1.json"
    path.write_text(json.dumps(rows))
    task = get_task("qa_2", data=str(path))
    assert task.params()["data"]["questions"] == 2  # yes/no questions kept, as RULER keeps them
    sample = next(s for s in task.samples(byte_tok, 2048, 2) if s.references == ["Amber Sea"])
    assert "Korrin\nKorrin lies on the Velda." in sample.prompt and "The Velda reaches the Amber Sea." in sample.prompt
    assert "Other\nNothing to see." in sample.prompt  # every paragraph of the distractor setting, as RULER
    assert len(sample.metadata["gold_documents"]) == 3


@pytest.mark.parametrize("content", ["{not json", json.dumps({"rows": []}), json.dumps({"data": []})])
def test_bad_qa_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(MmxError):
        get_task("qa_1", data=str(path))


def test_offline_qa_is_labelled_never_silent() -> None:
    for name in ("qa_1", "qa_2"):
        task = get_task(name)
        assert task.name == f"synth_{name}" and task.params()["substitute_for"] == name
    assert get_task("qa_1", data="synthetic").name == "synth_qa_1"
