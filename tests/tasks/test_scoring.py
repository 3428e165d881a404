"""RULER's metrics: case-insensitive containment after stripping and turning control characters into newlines."""

from __future__ import annotations

import pytest

from mmx.tasks import Sample, get_task, string_match_all, string_match_part
from mmx.tasks.scoring import normalize_prediction


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("1234567", ["1234567"], 1.0),
        ("The special magic number is 1234567.", ["1234567"], 1.0),
        ("ABLE-SADDLE", ["able-saddle"], 1.0),
        ("", ["1234567"], 0.0),
        ("   \n\t ", ["x"], 0.0),
        ("7654321 and 1234567", ["1234567", "7654321", "1111111"], 2 / 3),
        ("nothing here", ["a1", "b2"], 0.0),
        ("Ünïcödé ÉTÉ", ["ünïcödé été"], 1.0),
        ("STRASSE", ["Straße"], 1.0),  # casefold, a superset of lower()
        ("早上好 1234", ["早上好"], 1.0),
    ],
)
def test_string_match_all(prediction: str, references: list[str], expected: float) -> None:
    assert string_match_all(prediction, references) == pytest.approx(expected)


def test_control_characters_split_words() -> None:
    """A control byte between two words becomes a newline, so it neither joins nor hides them."""
    assert normalize_prediction("  abc\x00def\x1b  ") == "abc\ndef"
    assert string_match_all("abc\x07def", ["abc\ndef"]) == 1.0
    assert string_match_all("abc\x07def", ["abcdef"]) == 0.0


def test_string_match_part_needs_any_reference() -> None:
    assert string_match_part("It was in Paris, I think.", ["paris", "Lyon"]) == 1.0
    assert string_match_part("It was in Rome.", ["paris", "Lyon"]) == 0.0
    assert string_match_part("", ["paris"]) == 0.0


@pytest.mark.parametrize("references", [[], [""], ["ok", ""]])
def test_missing_references_are_an_error(references: list[str]) -> None:
    with pytest.raises(ValueError, match="reference"):
        string_match_all("anything", references)
    with pytest.raises(ValueError, match="reference"):
        string_match_part("anything", references)


def test_tasks_score_with_their_metric() -> None:
    sample = Sample("qa_1", 4096, 0, "p", "Answer:", ["Paris", "City of Paris"], 32)
    qa, vt = get_task("qa_1"), get_task("vt")
    assert qa.score(sample, "paris") == 1.0  # part: one alternative is enough
    two = Sample("vt", 4096, 0, "p", "", ["ABCDE", "FGHIJ"], 30)
    assert vt.score(two, "ABCDE") == 0.5  # all: each reference counts


def test_prompt_hash_covers_prompt_and_prefix() -> None:
    a = Sample("t", 1, 0, "prompt", "prefix", ["x"], 1)
    assert a.prompt_hash == Sample("t", 2, 5, "prompt", "prefix", ["y"], 9).prompt_hash
    assert a.prompt_hash != Sample("t", 1, 0, "prompt", "prefix2", ["x"], 1).prompt_hash
    assert a.prompt_hash != Sample("t", 1, 0, "promptp", "refix", ["x"], 1).prompt_hash
