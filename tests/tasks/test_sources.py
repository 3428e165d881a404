"""Prompt sources: RULER's files read byte for byte, task options checked, mmx's generators as hard as RULER's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugins.ruler_data import ruler_rows, write_ruler_folder

from mmx.errors import MmxError
from mmx.model import ByteTokenizer
from mmx.tasks import get_task
from mmx.tasks.lexicon import lexicon
from mmx.tasks.options import assign, parse_pairs
from mmx.tasks.registry import task_options
from mmx.tasks.sources import resolve_source
from mmx.tasks.sources.ruler_files import find_files


@pytest.mark.parametrize("new_format", [True, False], ids=["with-answer_prefix", "prefix-inside-input"])
def test_ruler_rows_become_samples_byte_for_byte(tmp_path: Path, new_format: bool) -> None:
    folder = write_ruler_folder(tmp_path / "4k", {"niah_single_1": 3, "qa_1": 2}, new_format)
    source = resolve_source(f"ruler:{folder}", None, [])
    assert source.lengths == [4096] and source.rows == 2 and list(source.tasks) == ["niah_single_1", "qa_1"]
    lines = (folder / "niah_single_1" / "validation.jsonl").read_text().splitlines()
    samples = source.tasks["niah_single_1"].samples(ByteTokenizer(), 4096, 3)
    for line, sample in enumerate(samples):
        row = json.loads(lines[line])
        assert sample.text == row["input"] + row.get("answer_prefix", "")  # what the model reads, exactly
        assert sample.index == line and sample.references == row["outputs"] and sample.max_new_tokens == 128
        assert sample.metadata["ruler_length"] == row["length"]
    assert source.tasks["qa_1"].max_new_tokens == 32
    assert source.describe()["comparable"] is False  # 2 of 13 tasks


def test_ruler_layouts_and_lengths(tmp_path: Path) -> None:
    write_ruler_folder(tmp_path / "runs" / "8192" / "data", {"vt": 1})
    write_ruler_folder(tmp_path / "runs" / "4k", {"vt": 1})
    assert sorted(find_files(tmp_path / "runs")) == [4096, 8192]
    flat = write_ruler_folder(tmp_path / "mine", {"vt": 1})  # no length in the name: the power of two that holds it
    assert list(find_files(flat)) == [1024]
    with pytest.raises(MmxError, match="no RULER data"):
        find_files(tmp_path / "runs" / "4k" / "vt")
    with pytest.raises(MmxError, match="no RULER data for cwe"):
        resolve_source(f"ruler:{tmp_path / 'runs'}", ["cwe"], [])
    with pytest.raises(MmxError, match="take no task options"):
        resolve_source(f"ruler:{flat}", None, parse_pairs(["corpus=x"]))


def test_old_rows_cannot_drop_their_answer_prefix(tmp_path: Path) -> None:
    folder = write_ruler_folder(tmp_path / "1k", {"vt": 1}, new_format=False)
    task = resolve_source(f"ruler:{folder}", None, [], answer_prefix=False).tasks["vt"]
    with pytest.raises(MmxError, match="answer prefix inside 'input'"):
        task.samples(ByteTokenizer(), 1024, 1)


def test_ruler_scores_use_rulers_metric_per_task(tmp_path: Path) -> None:
    folder = write_ruler_folder(tmp_path / "1k", {"vt": 1, "qa_1": 1})
    tasks = resolve_source(f"ruler:{folder}", None, []).tasks
    vt = tasks["vt"].samples(ByteTokenizer(), 1024, 1)[0]
    qa = tasks["qa_1"].samples(ByteTokenizer(), 1024, 1)[0]
    assert tasks["vt"].score(vt, "var0a") == 0.5  # all: each reference counts, case-insensitive
    assert tasks["qa_1"].score(qa, "STREET 0") == 1.0  # part: any reference
    assert tasks["qa_1"].score(qa, "STRASSE 0") == 0.0  # lower(), not casefold, as RULER
    assert ruler_rows("qa_1", 1, True)[0]["outputs"] == qa.references


def test_options_go_to_the_tasks_that_use_them() -> None:
    uses = lambda name: set(task_options(name)) - {"answer_prefix"}  # noqa: E731
    pairs = parse_pairs(["corpus=essays", "qa_1.data=dev.json"], ["qa_1"])
    assert assign(pairs, ["niah_single_1", "niah_single_2", "qa_1"], uses) == {
        "niah_single_2": {"corpus": "essays"},
        "qa_1": {"data": "dev.json"},
    }
    with pytest.raises(MmxError, match="no selected task takes option 'corpus'"):
        assign(parse_pairs(["corpus=x"]), ["niah_single_1", "vt"], uses)  # noise haystacks read no essays
    with pytest.raises(MmxError, match="task vt has no option 'depths'"):
        assign(parse_pairs(["vt.depths=3"], ["vt"]), ["vt"], uses)
    with pytest.raises(MmxError, match="not selected"):
        assign(parse_pairs(["qa_1.data=x"], ["qa_1"]), ["vt"], uses)


def test_vt_states_the_count_as_ruler_does() -> None:
    sample = get_task("vt").sample(ByteTokenizer(), 4096, 0)
    assert f" {len(sample.references)} variables " in sample.answer_prefix


@pytest.mark.parametrize("length", [4096, 131072])
def test_cwe_answers_look_like_the_distractors(length: int) -> None:
    """At every length the answers come from the pool the distractors come from, so word form gives nothing away."""
    sample = get_task("cwe").sample(ByteTokenizer(), length, 0)
    listed = set(sample.prompt.split("Now the real list:")[1].split("Question:")[0].split()[1::2])
    plain = {w for w in listed if w in set(lexicon().common_words)}
    compound_share = 1 - len(plain) / len(listed)
    answer_share = sum(w not in plain for w in sample.references) / len(sample.references)
    assert (compound_share > 0.9) == (answer_share > 0.9) and (compound_share < 0.1) == (answer_share < 0.1)


def test_essay_haystacks_share_their_text_up_to_the_first_needle() -> None:
    task, tok = get_task("niah_single_2"), ByteTokenizer()
    a, b = (task.sample(tok, 8192, i) for i in range(2))
    key = "One of the special magic"
    first = min(a.prompt.index(key), b.prompt.index(key))
    assert a.prompt[:first].rstrip() == b.prompt[:first].rstrip() and first > 1000
