"""The tuning sweep's choices, which need no GPU: the winner, the merge of two kernels' best, the candidate list."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.kernels import sweep
from benchmarks.kernels.sweep import Row, main, merged, pick
from mmx.kernels import triton_fwd
from mmx.kernels.plan import KernelConfig
from mmx.kernels.testing import minimax_slopes, random_qkv
from mmx.workflows.bench.kernels import FWD_CANDIDATES

M1, M4 = 2**20, 2**22


def _row(name: str, changes: dict, length: int, ms: float, local: float = 1.0, out: float = 3.0, **kw: object) -> Row:
    return Row(name, changes, length, ms=ms, local_ms=local, outputs_ms=out, floor_fraction=0.4, **kw)  # type: ignore[arg-type]


def _launches(config: KernelConfig) -> str:
    """What the sweep runs with `config` (bf16, D=128): the two kernels' launches and the segmenting fields."""
    bf16 = torch.bfloat16
    outputs = [triton_fwd.output_launch(config, bf16, 8, 128, 128, walk, 2, False)
               for walk in triton_fwd.output_walks(config, bf16)]  # fmt: skip
    segmenting = (config.segment, config.programs_per_sm, config.max_segment)
    return repr((triton_fwd.local_launch(config, bf16, 8, 128, 128), outputs, segmenting))


def test_candidates_are_valid_distinct_launches() -> None:
    """Every candidate launches something the others do not (a candidate that spells out a default wastes the
    sweep's budget re-measuring it)."""
    names = [name for name, _ in FWD_CANDIDATES]
    assert len(set(names)) == len(names) and FWD_CANDIDATES[0] == ("default", {})
    launches = [_launches(KernelConfig(**changes)) for _, changes in FWD_CANDIDATES]
    assert len(set(launches)) == len(launches)


def test_pick_takes_the_least_total_among_complete_correct_candidates() -> None:
    rows = [
        _row("a", {}, M1, 5.0), _row("a", {}, M4, 20.0),
        _row("b", {"chunk": 64}, M1, 4.0), _row("b", {"chunk": 64}, M4, 19.0),
        _row("c", {"fwd_stages": 1}, M1, 1.0, status="wrong"), _row("c", {"fwd_stages": 1}, M4, 1.0),
        _row("d", {"fwd_warps": 16}, M1, 1.0),  # never measured at 4M (the budget ran out)
        Row("e", {"value_split": 2}, M1, status="error", note="OutOfResources"),
    ]  # fmt: skip
    assert pick(rows, [M1, M4]) == ("b", {"chunk": 64})
    assert pick(rows[4:], [M1, M4]) is None


def test_merge_combines_the_fastest_outputs_and_local_kernels() -> None:
    rows = [
        _row("default", {}, M4, 20.0, local=5.0, out=14.0),
        _row("split", {"chunk": 64, "value_split": 2}, M4, 18.0, local=5.5, out=11.0),
        _row("local64", {"local_chunk": 64, "local_stages": 3}, M4, 19.0, local=4.0, out=14.2),
    ]
    assert merged(rows) == {"chunk": 64, "value_split": 2, "local_chunk": 64, "local_stages": 3}
    assert merged(rows[:2]) is None  # no candidate changed only the local-state kernel
    assert merged([*rows, _row("merged", merged(rows), M4, 17.0)]) is None  # already measured


def test_lines_show_time_floor_registers_and_config() -> None:
    stats = {"regs": 255, "spills": 3, "shared": 229376}
    row = _row("default", {"chunk": 64}, M4, 17.25, error=2.8e-3, local_stats=stats, outputs_stats=stats)
    line = row.line()
    assert "17.250 ms" in line and "40% of floor" in line and "255 regs, 3 spilled" in line
    assert "err 2.8e-03" in line and line.endswith(json.dumps({"chunk": 64}))
    assert "OutOfResources" in Row("x", {}, M4, status="error", note="OutOfResources: shared").line()


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the kernels through the CPU interpreter")
def test_run_measures_each_candidate_then_the_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole sweep on small fp32 inputs in the interpreter, with a stand-in clock that makes 32-row blocks and
    3 local stages the fastest: every candidate is checked against the reference, and the merge of the two wins."""

    def inputs(length: int, heads: int, dim: int) -> tuple[torch.Tensor, ...]:
        torch.manual_seed(length)
        return (*random_qkv(1, length, heads, dim), minimax_slopes(heads))

    clock = {"ms": 0.0}

    def fake_time(fn: object) -> float:
        fn()  # type: ignore[operator]
        return clock["ms"]

    def fake_measure(name: str, changes: dict, *args: object) -> Row:
        clock["ms"] = 10.0 - 3.0 * (changes.get("chunk") == 32) - 1.0 * (changes.get("local_stages") == 3)
        return real_measure(name, changes, *args)

    real_measure = sweep.measure
    monkeypatch.setattr(sweep, "_inputs", inputs)
    monkeypatch.setattr(sweep, "_time_ms", fake_time)
    monkeypatch.setattr(sweep, "measure", fake_measure)
    candidates = [("default", {"segment": 64}), ("rows32", {"segment": 64, "chunk": 32}),
                  ("local3", {"local_stages": 3})]  # fmt: skip
    rows, winner = sweep.run([130, 200], 2, 32, bandwidth=1.0, budget=600, workers=1, candidates=candidates)
    assert [r.name for r in rows] == ["default", "default", "rows32", "rows32", "local3", "local3", "merged", "merged"]
    assert all(r.status == "ok" for r in rows) and rows[0].error < 1e-5 and rows[1].error is None
    assert winner == ("merged", {"segment": 64, "chunk": 32, "local_stages": 3})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_main_needs_a_gpu_and_integer_lengths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--lengths", "4096"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["--lengths", "1m"])
    assert done.value.code == 2 and "--lengths takes integers" in capsys.readouterr().err
