"""`--source lm-eval`: prompts made by lm-evaluation-harness's RULER port, sized in mmx's tokenizer, fully offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmx.errors import MmxError
from mmx.model import ByteTokenizer
from mmx.tasks.options import parse_pairs
from mmx.tasks.sources import resolve_source

SENTINEL = "The lighthouse keeper counted seventeen gulls on the northern pier"


@pytest.fixture
def offline_nltk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An NLTK data folder with an (untrained) punkt_tab model, and no Hugging Face cache at all."""
    import nltk

    folder = tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (folder / name).write_text("")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def essays(tmp_path: Path) -> Path:
    folder = tmp_path / "essays"
    folder.mkdir()
    for i in range(3):
        text = " ".join(f"Essay {i} sentence {j} talks about founders, cities and code." for j in range(300))
        (folder / f"essay{i}.txt").write_text(f"{SENTINEL} {i}. {text}\n")
    return folder


def test_prompts_come_from_the_port_with_local_essays(offline_nltk: None, essays: Path) -> None:
    options = parse_pairs([f"corpus={essays}"])
    source = resolve_source("lm-eval", ["niah_single_1", "niah_single_2"], options)
    assert source.describe()["comparable"] is False and "lm-eval" in source.describe()["not_comparable_because"]
    tok = ByteTokenizer()
    essay = source.tasks["niah_single_2"].samples(tok, 4096, 2, seed=3)
    noise = source.tasks["niah_single_1"].samples(tok, 4096, 2, seed=3)
    for sample in essay + noise:
        assert sample.max_new_tokens == 128 and sample.references[0] in sample.prompt
        assert sample.answer_prefix.startswith(" The special magic number for")  # gen_prefix after lm-eval's " "
        assert len(tok.encode(sample.text)) + sample.max_new_tokens <= 4096
    assert SENTINEL in essay[0].prompt and SENTINEL not in noise[0].prompt
    again = source.tasks["niah_single_2"].samples(tok, 4096, 2, seed=3)
    assert [s.prompt_hash for s in again] == [s.prompt_hash for s in essay]  # seeded: a run resumes
    params = source.tasks["niah_single_2"].params()
    assert params["haystack"]["corpus"] == str(essays) and params["lm_eval_task"] == "niah_single_2"


def test_without_essays_offline_it_says_what_to_fetch(offline_nltk: None) -> None:
    with pytest.raises(MmxError) as err:
        resolve_source("lm-eval", ["niah_single_2"], [])
    assert "not on this machine" in err.value.args[0] and "corpus=" in str(err.value.hint)


def test_qa_needs_its_data_file(offline_nltk: None) -> None:
    with pytest.raises(MmxError, match="needs SQuAD"):
        resolve_source("lm-eval", ["qa_1"], [])


def test_vt_refuses_a_tokenizer_its_example_cannot_fit(offline_nltk: None) -> None:
    task = resolve_source("lm-eval", ["vt"], []).tasks["vt"]
    with pytest.raises(MmxError, match="worked example"):
        task.samples(ByteTokenizer(), 4096, 1)
