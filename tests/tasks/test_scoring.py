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
        ("STRASSE", ["Straße"], 0.0),  # RULER lower-cases: "strasse" does not contain "straße"
        ("Straße", ["STRASSE"], 0.0),
        ("STRAßE", ["straße"], 1.0),
        ("ﬁnal", ["final"], 0.0),  # a ligature is not its letters under lower()
        ("ΌΣΟΣ", ["όσος"], 1.0),  # lower() writes a word-final capital sigma as ς
        ("όσος", ["όσοσ"], 0.0),  # ...and keeps ς apart from σ (casefold would match them)
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


def ruler_metric(metric: str, preds: list[str], refs: list[list[str]]) -> float:
    """NVIDIA/RULER's scripts/eval metric over a file, written out from its definition: post-process (strip, control
    characters to newlines, strip), then per row the share of references found (all) or any found (part), with
    `str.lower` on both sides; mean x 100, rounded to 2 places."""
    import re

    done = [re.sub(r"[\x00-\x1f]", "\n", p.strip()).strip() for p in preds]
    if metric == "all":
        rows = [sum(r.lower() in p.lower() for r in ref) / len(ref) for p, ref in zip(done, refs, strict=True)]
    else:
        rows = [max(1.0 if r.lower() in p.lower() else 0.0 for r in ref) for p, ref in zip(done, refs, strict=True)]
    return round(sum(rows) / len(rows) * 100, 2)


@pytest.mark.parametrize(
    ("prediction", "references"),
    [
        ("", ["1234567"]),
        ("  The answer: 1234567\x00", ["1234567"]),
        ("ABC and def", ["abc", "DEF", "ghi"]),
        ("Straße STRASSE ﬁ", ["straße", "strasse", "fi"]),
        ("ΟΔΟΣ", ["οδος", "οδοσ"]),
        ("anything", [""]),  # RULER: "" is in every string
        ("x\ty", ["x\ny", "x y"]),
    ],
)
def test_scores_equal_rulers_metric(prediction: str, references: list[str]) -> None:
    for metric, ours in (("all", string_match_all), ("part", string_match_part)):
        assert round(100 * ours(prediction, references), 2) == ruler_metric(metric, [prediction], [references])


def test_no_references_scores_zero() -> None:
    """RULER raises on a sample without references; mmx scores it 0 so the run goes on and the failure shows."""
    assert string_match_all("anything", []) == 0.0
    assert string_match_part("anything", []) == 0.0


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
