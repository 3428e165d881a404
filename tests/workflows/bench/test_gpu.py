"""On a CUDA device: bf16 by default, peak memory and MFU recorded, and an impossible batch recorded as OOM."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_a_cuda_run_records_memory_utilisation_and_an_oom(mmx, tmp_path, bench_records):
    free = torch.cuda.mem_get_info()[0]
    rows = int(free // (4 * 16 * 16 * 4 * 3)) * 4  # lightning states alone for this many rows exceed free memory
    args = ("--model", "random:tiny", "--lengths", "4k,8k", "--decode-steps", "4", "--peaks", "measure", "--quiet")
    code, _, err = mmx("bench", "throughput", *args, "--batch-sizes", f"1,{rows}", "--out", tmp_path / "run")
    assert code == 0, err
    records = {(r["bench"], r["length"], r["batch_size"]): r for r in bench_records(tmp_path / "run")}
    for length in (4096, 8192):
        prefill = records[("prefill", length, 1)]
        assert prefill["status"] == "ok" and prefill["dtype"] == "bf16" and prefill["lightning"] == "triton"
        assert prefill["peak_mem_gb"] > 0 and 0 < prefill["mfu"] < 1
        assert 0 < records[("decode", length, 1)]["bandwidth_util"] < 1
        assert records[("decode", length, rows)]["status"] == "oom"


def test_the_prefill_chunk_is_measured_on_the_device():
    from mmx.model.backends.base import load_backend
    from mmx.model.generate import ACTIVATION_SHARE, DEFAULT_CHUNK, MAX_CHUNK, activation_bytes, activations_per_token

    backend = load_backend("mmx-mini")
    per_token = activations_per_token(backend.model)
    assert 0 < per_token < 10 * activation_bytes(backend.config, 2)  # measured, and of the estimate's order
    assert DEFAULT_CHUNK <= backend.prefill_chunk <= MAX_CHUNK
    assert (
        backend.prefill_chunk * backend.activation_bytes
        <= ACTIVATION_SHARE * torch.cuda.get_device_properties(0).total_memory
    )
