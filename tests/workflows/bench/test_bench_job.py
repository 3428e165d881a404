"""`mmx bench throughput` as a torchrun job on two gloo ranks: every rank measures, rank 0 alone records, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ARGS = ("--model", "random:tiny", "--lengths", "1k", "--batch-sizes", "2", "--decode-steps", "2", "--repeats", "1")


def _rank_bench(rank: int, world: int, out: Path, extra: tuple[str, ...]) -> None:
    from mmx.commands.app import main

    with pytest.raises(SystemExit) as done:
        main(["bench", "throughput", *ARGS, "--device", "cpu", "--out", str(out), "--quiet", *extra])
    assert (done.value.code or 0) == 0


@pytest.mark.parametrize(
    ("extra", "tp", "replicas"),
    [(("--tp", "2", "--quantize-experts", "int8"), 2, 1), ((), 1, 2)],
    ids=["tp2-int8", "dp2"],
)
def test_a_job_measures_in_step_and_records_once(gloo_ranks, tmp_path, bench_records, extra, tp, replicas):
    out = tmp_path / "run"
    gloo_ranks(_rank_bench, 2, out, extra)
    records = bench_records(out)
    assert [(r["bench"], r["length"], r["batch_size"]) for r in records] == [("prefill", 1024, 1), ("decode", 1024, 2)]
    for record in records:
        assert record["status"] == "ok" and record["tensor_parallel"] == tp and record["data_parallel"] == replicas
        assert record["peak_mem_gb_per_rank"] == [None, None]  # CPU ranks have no allocator peak; one entry each
        assert record["planned_peak_gb"] > 0
    assert records[0]["tokens_per_s"] == pytest.approx(replicas * 1024 / records[0]["ttft_s"])
    meta = json.loads((out / "run.json").read_text())
    assert meta["launch"] == {"world_size": 2, "tensor_parallel": tp, "data_parallel": replicas}
    assert (records[0].get("quantized_experts") == "int8") == (tp == 2)
