"""`--devices`: which ranks a job gets, what each of them runs, and one-line refusals of what cannot run."""

from __future__ import annotations

import pytest

from mmx.errors import MmxError
from mmx.workflows.launch import child_argv, parse_devices, visible_devices


def test_devices_are_gpu_ids_or_cpus():
    assert parse_devices("0,1,2,3") == ["0", "1", "2", "3"]
    assert parse_devices("cuda:2, cuda:3") == ["2", "3"]
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,cpu", "mixes GPUs and the CPU"),
        ("0,0", "names a GPU twice"),
        ("gpu1", "bad device 'gpu1'"),
        (",", "no device"),
    ],
)
def test_bad_devices_are_one_error(text, message):
    with pytest.raises(MmxError, match=message):
        parse_devices(text)


def test_each_rank_runs_the_command_without_devices_on_its_own_device():
    argv = ["eval", "ruler", "--device", "cuda:1", "--devices=0,1", "--tp", "2", "--json"]
    assert child_argv(argv, ["0", "1"]) == ["eval", "ruler", "--tp", "2", "--json", "--device", "cuda"]
    assert child_argv(["bench", "throughput", "--devices", "cpu,cpu"], ["cpu", "cpu"])[-2:] == ["--device", "cpu"]


def test_gpu_ids_count_among_the_gpus_this_process_sees(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_devices(["0", "1"]) == "0,1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert visible_devices(["0", "2"]) == "4,6"
    with pytest.raises(MmxError, match="names GPU 5, but CUDA_VISIBLE_DEVICES shows this process 4"):
        visible_devices(["5"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tp", "2"), "--tp 2 needs 2 processes, one per GPU — launch with `torchrun --nproc-per-node 2"),
        (("--tp", "3"), "--tp 3 cannot split 4 attention heads and 4 experts"),
        (("--devices", "cpu,cpu", "--tp", "4"), "--tp 4 does not divide the 2 devices"),
        (("--quantize-experts", "int4"), "unknown --quantize-experts 'int4'"),
    ],
)
def test_the_eval_command_refuses_a_layout_it_cannot_run(mmx, tmp_path, args, message):
    code, _, err = mmx(
        "eval",
        "ruler",
        "--model",
        "random:tiny",
        "--tasks",
        "vt",
        "--lengths",
        "1k",
        "--samples",
        "1",
        "--out",
        tmp_path / "run",
        *args,
    )
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
