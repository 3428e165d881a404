"""`mmx bench kernels` pieces that need no GPU: HBM-floor arithmetic, target evaluation, input errors."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from mmx.commands.app import main
from mmx.workflows.bench.kernel_run import evaluate_targets
from mmx.workflows.bench.kernels import Result


def _rec(op: str, impl: str, length: int, ms: float, heads: int = 8, note: str = "") -> dict:
    floor = 4 * length * heads * 128 * 2
    return Result(op, impl, length, 1, heads, 128, "bfloat16", ms=ms, floor_bytes=floor, note=note).record(4e12)


def test_record_states_the_hbm_floor() -> None:
    rec = _rec("prefill", "mmx", 2**22, 20.0)
    assert rec["hbm_floor_ms"] == pytest.approx(4 * 2**22 * 8 * 128 * 2 / 4e12 * 1e3)
    assert rec["hbm_fraction"] == pytest.approx(rec["hbm_floor_ms"] / 20.0)
    assert rec["tokens_per_s"] == pytest.approx(2**22 / 0.02)
    oom = Result("prefill", "fla", 2**22, 1, 8, 128, "bfloat16", status="oom").record(4e12)
    assert oom["tokens_per_s"] is None and oom["hbm_fraction"] is None


def test_targets_take_the_worst_length() -> None:
    records = [
        _rec("prefill", "mmx", 2**18, 1.0), _rec("prefill", "fla", 2**18, 2.0),
        _rec("prefill", "mmx", 2**22, 10.0), _rec("prefill", "fla", 2**22, 14.0),
        _rec("prefill", "mmx", 2**12, 1.0), _rec("prefill", "fla", 2**12, 0.5),  # below 256k: not a target
        _rec("packed", "mmx", 2**22, 11.0, note="64 x 65536 tokens via cu_seqlens"),
        _rec("packed", "mmx", 2**22, 10.0, note="one sequence"),
    ]  # fmt: skip
    targets = {t["target"]: t for t in evaluate_targets(records)}
    speed = targets["speed-up over fla at every T ≥ 256k (H=8)"]
    assert speed["value"] == pytest.approx(1.4) and speed["met"] is False
    floor = targets["fraction of the HBM floor at T = 4M (H=8)"]
    assert floor["value"] == pytest.approx(records[2]["hbm_fraction"])
    packed = targets["packed throughput / one-sequence throughput"]
    assert packed["value"] == pytest.approx(10 / 11) and packed["met"] is True
    assert targets["speed-up over fla, one Python call per step (B=64, H=8)"]["met"] is None  # not measured


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--head-dim", "48"], "bad --head-dim 48"),
        (["--ops", "prefill,sideways"], "bad --ops"),
        (["--heads", "8,x"], "bad --heads"),
        (["--lengths", "4k", "--max-len", "1m"], "both given"),
        (["--max-len", "4q"], "bad size"),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], message: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(["bench", "kernels", *args])
    assert done.value.code == 2
    assert err.getvalue().startswith("error: ") and message in err.getvalue() and err.getvalue().count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_needs_a_gpu() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(["bench", "kernels", "--lengths", "4k"])
    assert done.value.code == 2 and "needs a CUDA GPU" in err.getvalue()
