"""Aggregation formulas against hand-computed values and RULER's published Gemini-1.5-Pro example."""

from __future__ import annotations

import pytest

from mmx.errors import MmxError
from mmx.results.aggregate import (
    cell_scores,
    depth_matrix,
    effective_length,
    length_means,
    log2_slope,
    retention,
    summarize,
    weighted_average,
)
from mmx.results.published import REFERENCES, get_reference

K = 1024
RULER_LENGTHS = [4 * K, 8 * K, 16 * K, 32 * K, 64 * K, 128 * K]
GEMINI = dict(zip(RULER_LENGTHS, [96.7, 95.8, 96.0, 95.9, 95.9, 94.4], strict=True))


def rec(task: str, length: int, score: float | None, status: str = "ok", **metadata: float) -> dict:
    return {"task": task, "length": length, "index": 0, "score": score, "status": status, "metadata": metadata}


def test_cell_scores_average_ok_samples_only_and_count_statuses() -> None:
    cells = cell_scores(
        [
            rec("vt", 4 * K, 1.0),
            rec("vt", 4 * K, 0.5),
            rec("vt", 4 * K, None, "error"),
            rec("vt", 8 * K, None, "oom"),
            rec("cwe", 4 * K, 0.25),
            rec("cwe", 4 * K, None),  # "ok" without a score cannot be averaged: counted as an error
        ]
    )
    assert list(cells) == [("cwe", 4 * K), ("vt", 4 * K), ("vt", 8 * K)]
    vt = cells[("vt", 4 * K)]
    assert vt.mean == pytest.approx(75.0) and vt.n == 2 and vt.total == 3
    assert vt.counts == {"ok": 2, "error": 1} and not vt.oom
    assert cells[("vt", 8 * K)].mean is None and cells[("vt", 8 * K)].oom
    assert cells[("cwe", 4 * K)].mean == pytest.approx(25.0) and cells[("cwe", 4 * K)].counts == {"ok": 1, "error": 1}


def test_ruler_published_example_gemini() -> None:
    """RULER's table: Gemini-1.5-Pro 96.7 … 94.4 over 4k–128k → Avg 95.8, wAvg(inc) 95.5."""
    s = summarize(GEMINI)
    assert round(s.avg, 1) == 95.8
    assert round(s.wavg_inc, 1) == 95.5
    # by hand: (96.7·6 + 95.8·5 + 96.0·4 + 95.9·3 + 95.9·2 + 94.4·1) / 21 = 2017.1 / 21
    assert s.wavg_dec == pytest.approx(2017.1 / 21)
    assert s.effective_length == 128 * K


def test_weights_match_rulers_six_length_weights() -> None:
    """wAvg(inc) weights for six lengths are 0.048, 0.095, 0.143, 0.190, 0.238, 0.286 (∝ i); dec reverses them."""
    inc = [weighted_average({n: float(n == m) for n in RULER_LENGTHS}) for m in RULER_LENGTHS]
    dec = [weighted_average({n: float(n == m) for n in RULER_LENGTHS}, increasing=False) for m in RULER_LENGTHS]
    assert [round(w, 3) for w in inc] == [0.048, 0.095, 0.143, 0.190, 0.238, 0.286]
    assert dec == pytest.approx(inc[::-1])


def test_effective_length_is_the_longest_length_strictly_above_threshold() -> None:
    means = {4 * K: 92.0, 8 * K: 85.6, 16 * K: 86.0, 32 * K: 40.0}
    assert effective_length(means) == 16 * K  # 8k sits exactly on 85.6: "exceeds" is strict
    assert effective_length(means, threshold=90) == 4 * K
    assert effective_length(means, threshold=95) is None
    assert effective_length({}) is None


def test_decay_figures_by_hand() -> None:
    means = {4 * K: 80.0, 8 * K: 70.0, 16 * K: 60.0, 32 * K: 50.0}
    assert log2_slope(means) == pytest.approx(-10.0)  # ten points lost per doubling
    assert retention(means) == pytest.approx(50.0 / 80.0)
    assert log2_slope({4 * K: 50.0}) is None and retention({4 * K: 50.0}) is None
    # a non-linear curve: x = 12, 13, 14 (log2), y = 90, 90, 60 → slope = Σ(x-13)(y-80)/Σ(x-13)² = (-10 - 20)/2
    assert log2_slope({4 * K: 90.0, 8 * K: 90.0, 16 * K: 60.0}) == pytest.approx(-15.0)


def test_length_means_over_the_tasks_that_scored() -> None:
    cells = cell_scores(
        [rec("a", 4 * K, 1.0), rec("b", 4 * K, 0.5), rec("a", 8 * K, 0.0), rec("b", 8 * K, None, "oom")]
    )
    means = length_means(cells, ["a", "b"], [4 * K, 8 * K, 16 * K])
    assert means[4 * K].mean == pytest.approx(75.0) and means[4 * K].complete
    assert means[8 * K].mean == pytest.approx(0.0) and means[8 * K].scored == 1 and not means[8 * K].complete
    assert means[16 * K].mean is None and not means[16 * K].complete
    s = summarize({n: m.mean for n, m in means.items()})
    assert list(s.means) == [4 * K, 8 * K]  # a length with no score is left out of every figure


def test_depth_matrix_groups_needle_samples_by_depth_and_length() -> None:
    records = [
        rec("niah", 4 * K, 1.0, depth=0.0),
        rec("niah", 4 * K, 0.0, depth=50.0),
        rec("niah", 4 * K, 1.0, depth=50.0),
        rec("niah", 8 * K, None, "oom", depth=50.0),
        rec("vt", 4 * K, 1.0, depth=0.0),  # another task: not in the needle grid
    ]
    m = depth_matrix(records)
    assert m.depths == [0.0, 50.0] and m.lengths == [4 * K, 8 * K]
    assert m.cells[(50.0, 4 * K)].mean == pytest.approx(50.0) and m.cells[(50.0, 4 * K)].n == 2
    assert m.cells[(50.0, 8 * K)].oom and (0.0, 8 * K) not in m.cells


def test_published_references_are_the_minimax_report_table() -> None:
    minimax = get_reference("MiniMax-Text-01")
    assert minimax.means[4 * K] == 96.3 and minimax.means[1024 * K] == 91.0 and len(minimax.means) == 9
    assert REFERENCES["gpt-4o"].means == dict(zip(RULER_LENGTHS[:5], [97.0, 92.1, 89.0, 88.8, 88.4], strict=True))
    with pytest.raises(MmxError, match="no published scores"):
        get_reference("llama")
