"""Published RULER scores (MiniMax-01 report, fractions × 100), shown beside measured runs as labelled reference rows.

They were measured by their authors on NVIDIA's RULER with its own data and 500 samples per cell, so they compare with
an mmx run in shape, not to the decimal; every table that shows one says "published, not measured".
"""

from __future__ import annotations

from dataclasses import dataclass

from mmx.errors import MmxError

_K = 1024
_LENGTHS = [4 * _K, 8 * _K, 16 * _K, 32 * _K, 64 * _K, 128 * _K, 256 * _K, 512 * _K, 1024 * _K]


@dataclass(frozen=True)
class Reference:
    """One model's published 13-task RULER means per length."""

    key: str
    label: str
    source: str
    means: dict[int, float]


def _row(key: str, label: str, scores: list[float]) -> Reference:
    return Reference(
        key=key,
        label=label,
        source="MiniMax-01 technical report (RULER table)",
        means={n: round(100 * s, 1) for n, s in zip(_LENGTHS, scores, strict=False)},
    )


REFERENCES: dict[str, Reference] = {
    ref.key: ref
    for ref in (
        _row("minimax-text-01", "MiniMax-Text-01", [0.963, 0.961, 0.953, 0.954, 0.943, 0.947, 0.945, 0.928, 0.910]),
        _row("gemini-1.5-pro", "Gemini-1.5-Pro (002)", [0.962, 0.960, 0.960, 0.958, 0.938, 0.917, 0.916, 0.861, 0.850]),
        _row("gemini-2.0-flash", "Gemini-2.0-Flash (exp)", [0.960, 0.960, 0.951, 0.957, 0.937, 0.860, 0.797, 0.709]),
        _row("claude-3.5-sonnet", "Claude-3.5-Sonnet (10-22)", [0.965, 0.960, 0.957, 0.950, 0.952, 0.938]),
        _row("gpt-4o", "GPT-4o (11-20)", [0.970, 0.921, 0.890, 0.888, 0.884]),
    )
}


def get_reference(key: str) -> Reference:
    """Look a reference up by its key (case-insensitive)."""
    try:
        return REFERENCES[key.strip().lower()]
    except KeyError:
        raise MmxError(f"no published scores for {key!r}", f"choose one of: {', '.join(REFERENCES)}") from None
