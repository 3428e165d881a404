"""`mmx bench throughput` end to end on a tiny random model on the CPU, and its argument errors."""

from __future__ import annotations

import json

import pytest

from mmx.model.chunk_attention import DEFAULT_PREFILL_PATH
from mmx.model.generate import DEFAULT_CHUNK
from mmx.results.runs import load_runs
from mmx.results.store import RunStore

# Two architectures of the tiny preset, ours and transformers' each, at two short lengths and two decode batches.
TINY = ("--model", "random:tiny", "--lengths", "24,40", "--batch-sizes", "1,3", "--decode-steps", "2", "--repeats", "1")
BOTH = ("--arch", "hybrid,softmax", "--compare-transformers")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    from mmx.commands.app import main

    out = tmp_path_factory.mktemp("bench") / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "throughput", *TINY, *BOTH, "--out", str(out), "--quiet"])
    assert exit_info.value.code in (0, None)
    return out


def test_every_measurement_is_a_well_formed_ok_record(tiny_run, bench_records):
    records = bench_records(tiny_run)
    series = ["mmx hybrid", "transformers hybrid", "mmx softmax", "transformers softmax"]
    cells = (("prefill", 1), ("decode", 1), ("decode", 3))
    expected = {(kind, s, n, b) for s in series for n in (24, 40) for kind, b in cells}
    assert {(r["bench"], r["impl"], r["length"], r["batch_size"]) for r in records} == expected
    for r in records:
        assert r["status"] == "ok", r
        assert r["tokens_per_s"] > 0 and r["device"] == "cpu" and r["dtype"] == "fp32"
        assert r["peak_mem_gb"] is None  # not measured on the CPU
        if r["bench"] == "prefill":
            assert r["ttft_s"] > 0 and r["flops"] > 0 and r["mfu"] is None  # no known CPU peak
        else:
            assert r["ttft_s"] is None and r["steps"] == 2 and r["bytes_per_step"] > 0
    # auto: what the native backend takes here (on a CPU the short chunk; on a GPU it is measured)
    assert all(r["chunk_size"] == DEFAULT_CHUNK for r in records if r["impl"].startswith("mmx"))
    assert all(r["prefill_attention"] == DEFAULT_PREFILL_PATH for r in records if r["impl"].startswith("mmx"))
    assert all(r["attn_implementation"] == "sdpa" for r in records if r["impl"].startswith("transformers"))


def test_run_json_says_what_ran_and_the_report_reads_it(tiny_run):
    meta = RunStore(tiny_run).meta
    assert meta["kind"] == "bench" and meta["suite"] == "throughput"
    assert meta["model"]["name"] == "tiny ×4 layers" and meta["model"]["random_weights"] is True
    assert [s["arch"] for s in meta["subjects"]] == ["hybrid", "hybrid", "softmax", "softmax"]
    assert [s["config"]["attn_type_list"] for s in meta["subjects"][::2]] == [[0, 0, 1, 0], [1, 1, 1, 1]]
    assert meta["params"]["lengths"] == [24, 40] and meta["command"][:3] == ["mmx", "bench", "throughput"]
    (run,) = load_runs([tiny_run])
    assert len(run.bench) == 24


def test_a_rerun_of_a_finished_run_measures_nothing(tiny_run, mmx, bench_records):
    before = bench_records(tiny_run)
    code, out, err = mmx("bench", "throughput", *TINY, *BOTH, "--out", tiny_run, "--json")
    assert code == 0 and "resuming" in err
    assert len(json.loads(out)["records"]) == len(before) == len(bench_records(tiny_run))


def test_a_saved_checkpoint_runs_as_loaded(mmx, tmp_path, bench_records):
    from mmx.model import MiniMaxConfig, MiniMaxForCausalLM

    MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny")).save_pretrained(tmp_path / "ckpt")
    args = ("--lengths", "32", "--batch-sizes", "2", "--decode-steps", "1", "--repeats", "1", "--chunk-size", "16")
    code, _, err = mmx("bench", "throughput", "--model", f"mmx:{tmp_path / 'ckpt'}", *args, "--out", tmp_path / "run")
    assert code == 0, err
    records = bench_records(tmp_path / "run")
    assert [(r["bench"], r["impl"], r["status"], r["chunk_size"]) for r in records] == [
        ("prefill", "ckpt", "ok", 16),  # two chunks of 16
        ("decode", "ckpt", "ok", 16),
    ]
    assert RunStore(tmp_path / "run").meta["model"]["random_weights"] is False


def test_prefill_attention_paths_are_series_of_one_run(mmx, tmp_path, bench_records):
    args = ("--model", "random:tiny", "--lengths", "40", "--chunk-size", "16", "--batch-sizes", "1")
    args += ("--decode-steps", "1", "--repeats", "1", "--prefill-attention", "masked,split")
    code, _, err = mmx("bench", "throughput", *args, "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    series = {(r["impl"], r["bench"]): r["prefill_attention"] for r in bench_records(tmp_path / "run")}
    assert series == {
        ("mmx hybrid masked", "prefill"): "masked",
        ("mmx hybrid masked", "decode"): "masked",
        ("mmx hybrid split", "prefill"): "split",
        ("mmx hybrid split", "decode"): "split",
    }
    meta = RunStore(tmp_path / "run").meta
    assert meta["params"]["prefill_attention"] == ["masked", "split"]
    assert [s["prefill_attention"] for s in meta["subjects"]] == ["masked", "split"]


def test_different_parameters_on_the_run_directory_are_refused(tiny_run, mmx):
    code, _, err = mmx("bench", "throughput", *TINY, "--arch", "hybrid", "--out", tiny_run)
    assert code == 2 and "different parameters" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--arch", "mamba"), "unknown architecture 'mamba'"),
        (("--model", "mmx-mini", "--layers", "2"), "--layers need random weights"),
        (("--model", "mmx-mini", "--compare-transformers"), "--compare-transformers need random weights"),
        (("--model", "openai:http://localhost:8000/v1"), "cannot be timed in-process"),
        (("--max-len", "64k", "--lengths", "4k"), "--max-len and --lengths both given"),
        (("--lengths", "4x"), "bad size '4x'"),
        (("--batch-sizes", "1,0"), "bad batch size '0'"),
        (("--repeats", "0"), "bad --repeats 0"),
        (("--decode-steps", "-1"), "bad --decode-steps -1"),
        (("--layers", "0", "--model", "random:tiny"), "bad --layers 0"),
        (("--layers", "100", "--model", "random:tiny"), "--layers 100 is more than the preset's 4 layers"),
        (("--peaks", "guess"), "unknown --peaks 'guess'"),
        (("--chunk-size", "0"), "bad --chunk-size '0'"),
        (("--budget", "0"), "bad --budget 0"),
        (("--prefill-attention", "fast"), "unknown --prefill-attention 'fast'"),
        (("--dtype", "int8"), "unknown dtype 'int8'"),
        (("--device", "cuda:7"), "cuda"),
        (("--model", "random:huge"), "unknown model preset 'huge'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(mmx, tmp_path, args, message):
    code, out, err = mmx("bench", "throughput", *args, "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message.lower() in err.lower() and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written
