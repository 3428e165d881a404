"""RULER's two metrics: a reference counts as found when it is a case-insensitive substring of the prediction.

Predictions are stripped and every control character becomes a newline first, so stray escape bytes from a model never
glue two words into one that hides a reference. Case folding uses `str.casefold` (a superset of RULER's `lower`, so
"STRASSE" also finds "Straße").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTROL = re.compile(r"[\x00-\x1f]")


def normalize_prediction(prediction: str) -> str:
    """Strip, turn control characters into newlines, strip again, and case-fold."""
    return _CONTROL.sub("\n", prediction.strip()).strip().casefold()


def _found(prediction: str, references: Sequence[str]) -> list[bool]:
    if not references or not all(references):
        raise ValueError("a sample needs at least one non-empty reference to be scored")
    text = normalize_prediction(prediction)
    return [ref.casefold() in text for ref in references]


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """The fraction of references found in the prediction (RULER's metric for retrieval, tracing and aggregation)."""
    found = _found(prediction, references)
    return sum(found) / len(found)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 if any reference is found, else 0.0 (RULER's metric for QA, where references are alternative answers)."""
    return 1.0 if any(_found(prediction, references)) else 0.0


METRICS = {"all": string_match_all, "part": string_match_part}
