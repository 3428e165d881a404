"""RULER's two metrics, exactly as NVIDIA/RULER's `scripts/eval` computes them per sample.

The prediction is stripped, every ASCII control character becomes a newline, and it is stripped again; a reference
counts as found when its `str.lower()` is a substring of the prediction's. Lower-casing (not `casefold`) is RULER's
choice, so "STRASSE" does not find "Straße" and a ligature does not match its letters, as in RULER. An empty
reference string is a substring of anything and counts as found, as in RULER. RULER crashes on a sample with no
references at all; here such a sample scores 0, so it shows up as a failure instead of stopping the run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess_prediction(prediction: str) -> str:
    """RULER's post-processing: strip, turn control characters into newlines, strip again (case kept)."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def normalize_prediction(prediction: str) -> str:
    """The text references are looked for in: RULER's post-processing, lower-cased."""
    return postprocess_prediction(prediction).lower()


def _found(prediction: str, references: Sequence[str]) -> list[bool]:
    text = normalize_prediction(prediction)
    return [ref.lower() in text for ref in references]


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """The fraction of references found in the prediction (RULER's metric for retrieval, tracing and aggregation)."""
    found = _found(prediction, references)
    return sum(found) / len(found) if found else 0.0


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 if any reference is found, else 0.0 (RULER's metric for QA, where references are alternative answers)."""
    return 1.0 if any(_found(prediction, references)) else 0.0


METRICS = {"all": string_match_all, "part": string_match_part}
