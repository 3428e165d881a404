"""`mmx eval ruler` / `mmx eval niah` in-process on random tiny weights: the run store, resume, output, every error."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch

from mmx.model.backends.base import load_backend, register_backend
from mmx.model.config import PRESETS


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_args):
    """One completed run (its directory and its --json output), shared because generating is the slow part."""
    from mmx.commands.app import main

    run_dir = tmp_path_factory.mktemp("cli") / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(["eval", "ruler", *tiny_args, "--out", str(run_dir), "--json"])
    assert done.value.code in (0, None), err.getvalue()
    return run_dir, json.loads(out.getvalue()), err.getvalue()


def _rows(table: str) -> dict[str, list[str]]:
    """The printed score table as {first cell: other cells}."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def _copy(run_dir, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def test_a_run_writes_the_store_and_json(finished, read_records):
    run_dir, report, err = finished
    assert f"writing run in {run_dir}" in err
    assert report["run_dir"] == str(run_dir) and report["resumed"] is False and report["new_samples"] == 4
    assert {(c["task"], c["length"], c["n"]) for c in report["cells"]} == {("vt", 1024, 2), ("synth_qa_1", 1024, 2)}
    assert report["model"]["random_weights"] is True and report["model"]["spec"] == "random:tiny"

    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["kind"] == "eval" and meta["suite"] == "ruler"
    assert meta["command"][:3] == ["mmx", "eval", "ruler"] and "--out" in meta["command"]
    assert meta["params"]["seed"] == 0 and meta["params"]["lengths"] == [1024] and meta["params"]["samples"] == 2
    assert meta["params"]["task_params"]["synth_qa_1"]["substitute_for"] == "qa_1"
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["hardware"]["cpu_count"] >= 1 and meta["model"]["dtype"] == "fp32"
    assert "git_commit" in meta and meta["started_at"]

    records = read_records(run_dir)
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
    for r in records:
        assert 0 < r["prompt_tokens"] <= 1024 and r["references"] and isinstance(r["prediction"], str)
        assert 0.0 <= r["score"] <= 1.0 and r["timings"]["generate_s"] > 0 and len(r["prompt_hash"]) == 16
        assert 0 < len(r["prediction"]) <= 32  # bytes decode to at most one character each (random weights: no EOS)
    summary = (run_dir / "summary.csv").read_text().splitlines()
    assert summary[0] == "task,length,n,score" and len(summary) == 3


def test_a_rerun_resumes_with_nothing_to_do_and_prints_the_table(finished, mmx, tiny_args, read_records):
    run_dir, report, _ = finished
    code, out, err = mmx("eval", "ruler", *tiny_args, "--out", run_dir)
    assert code == 0 and f"resuming run in {run_dir}" in err
    rows = _rows(out)
    scores = {c["task"]: c["score"] for c in report["cells"]}
    assert rows["vt"] == [f"{scores['vt']:.1f}"] and rows["synth_qa_1"] == [f"{scores['synth_qa_1']:.1f}"]
    assert rows["mean"] == [f"{(scores['vt'] + scores['synth_qa_1']) / 2:.1f}"]
    assert f"results in {run_dir}" in out
    assert len(read_records(run_dir)) == 4


def test_a_run_that_lost_its_run_json_resumes_when_rerun(finished, mmx, tiny_args, tmp_path, read_records):
    run = _copy(finished[0], tmp_path)
    kept = read_records(run)
    (run / "run.json").unlink()  # every other file the run wrote stays: they are mmx's, not the user's
    code, _, err = mmx("eval", "ruler", *tiny_args, "--out", run, "--json")
    assert code == 0, err
    assert read_records(run) == kept and (run / "run.json").is_file()


def test_a_corrupt_line_is_reported_skipped_and_its_sample_rerun(finished, mmx, tiny_args, tmp_path, read_records):
    run_dir = _copy(finished[0], tmp_path)
    path = run_dir / "samples.jsonl"
    lines = path.read_text().splitlines()
    lost = json.loads(lines[1])
    path.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    code, out, err = mmx("eval", "ruler", *tiny_args, "--out", run_dir, "--json")
    assert code == 0, err
    assert f"{path}:2: skipping a corrupt line" in err and json.loads(out)["new_samples"] == 1
    records = read_records(run_dir)
    assert len(records) == 4
    again = next(r for r in records if (r["task"], r["index"]) == (lost["task"], lost["index"]))
    assert (again["prediction"], again["score"]) == (lost["prediction"], lost["score"])


@pytest.mark.parametrize(
    ("change", "field"),
    [(("--samples", "3"), "samples"), (("--seed", "1"), "seed"), (("--model", "random:tiny:1"), "model")],
    ids=["samples", "seed", "model"],
)
def test_different_parameters_on_a_run_directory_are_refused(finished, mmx, tiny_args, read_records, change, field):
    run_dir = finished[0]
    args = list(tiny_args)
    flag, value = change
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    code, out, err = mmx("eval", "ruler", *args, "--out", run_dir)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and f"different parameters ({field})" in err
    assert len(read_records(run_dir)) == 4


def test_lengths_beyond_the_context_are_skipped(mmx, tmp_path):
    args = ("--model", "random:tiny", "--max-context", "2048", "--tasks", "vt", "--samples", "1", "--json")
    code, out, err = mmx("eval", "ruler", *args, "--lengths", "1k,4k,1m", "--out", tmp_path / "r")
    assert code == 0, err
    assert "skipping 4k: longer than the model's maximum context (2k tokens)" in err and "skipping 1m" in err
    report = json.loads(out)
    assert report["skipped_lengths"] == [4096, 2**20] and report["lengths"] == [1024]
    assert [c["length"] for c in report["cells"]] == [1024]
    assert report["model"]["max_context"] == 2048


def test_a_sweep_with_nothing_to_run_is_refused_and_writes_nothing(mmx, tmp_path):
    args = ("--model", "random:tiny", "--max-context", "2048", "--tasks", "vt", "--lengths", "4k,1m")
    code, out, err = mmx("eval", "ruler", *args, "--out", tmp_path / "r")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: nothing to run: every length asked for (4k, 1m) is longer than the model's maximum")
    assert not (tmp_path / "r").exists()


def test_niah_runs_one_sample_per_depth(mmx, tmp_path, read_records):
    code, out, err = mmx(
        "eval", "niah", "--model", "random:tiny", "--lengths", "1k", "--depths", "2", "--out", tmp_path / "n", "--json"
    )
    assert code == 0, err
    records = read_records(tmp_path / "n")
    assert sorted(r["metadata"]["depth"] for r in records) == [0.0, 100.0]
    meta = json.loads((tmp_path / "n" / "run.json").read_text())
    assert meta["suite"] == "niah" and meta["params"]["task_params"]["niah"]["depths"] == [0.0, 100.0]
    assert [c["task"] for c in json.loads(out)["cells"]] == ["niah"]


class _SmallMemory:
    """random:tiny that runs out of memory on prompts longer than `limit` tokens, as a GPU would."""

    limit = 1500

    def __init__(self, rest: str, **options) -> None:
        self.inner = load_backend(f"random:{rest}", **options)
        self.tokenizer, self.max_context = self.inner.tokenizer, self.inner.max_context

    def generate(self, prompts, max_new_tokens, stop=None):
        if max(len(self.tokenizer.encode(p)) for p in prompts) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return self.inner.generate(prompts, max_new_tokens, stop)

    def auto_batch_size(self, length, max_new_tokens):
        return self.inner.auto_batch_size(length, max_new_tokens)

    def loglikelihood(self, pairs):
        return self.inner.loglikelihood(pairs)

    def describe(self):
        return {**self.inner.describe(), "spec": "smallmem:tiny"}


def test_an_out_of_memory_cell_is_recorded_and_the_sweep_goes_on(mmx, tmp_path, read_records):
    register_backend("smallmem", _SmallMemory)
    run_dir = tmp_path / "oom"
    args = ("--model", "smallmem:tiny", "--tasks", "vt", "--lengths", "1k,2k,4k", "--samples", "2", "--out", run_dir)
    code, out, err = mmx("eval", "ruler", *args)
    assert code == 0, err
    # samples run in the sorted order of their prompts (prefix reuse), so either one may be the first to fail
    assert "out of memory at 2k: retrying with batch size 1" in err and "out of memory at 2k (vt #" in err
    status = {(r["length"], r["index"]): r["status"] for r in read_records(run_dir)}
    assert status == {(1024, 0): "ok", (1024, 1): "ok", (2048, 0): "oom", (2048, 1): "oom", (4096, 0): "oom",
                      (4096, 1): "oom"}  # fmt: skip
    assert _rows(out)["vt"][1:] == ["OOM", "OOM"] and _rows(out)["mean"][1:] == ["OOM", "OOM"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ruler", "--max-len", "4q"), "bad size '4q'"),
        (("ruler", "--max-len", "8k", "--lengths", "4k"), "--max-len and --lengths both given"),
        (("ruler", "--tasks", "vt,nope"), "unknown task 'nope'"),
        (("ruler", "--model", "nope"), "unknown model 'nope' — use mmx-mini or random:PRESET or mmx:PATH"),
        (("ruler", "--model", "tiny"), "no weights are shipped for 'tiny' — use --model random:tiny"),
        (("ruler", "--model", "random:nope"), "unknown model preset 'nope'"),
        (("ruler", "--model", "mmx:/nonexistent/ckpt"), "checkpoint directory /nonexistent/ckpt does not exist"),
        (("ruler", "--model", "mmx:{tmp}"), "no *.safetensors weights in"),
        (("ruler", "--out", "{tmp}/file/run"), "is not a writable directory"),
        (("ruler", "--out", "{tmp}/file"), "is a file, not a directory"),
        (("ruler", "--out", "{tmp}/" + "a" * 300), "choose a shorter path"),
        (
            ("ruler", "--model", "mmx:{tmp}/list-config"),
            "list-config/config.json: the top level: expected a JSON object",
        ),
        (("ruler", "--model", "mmx:{tmp}/str-config"), "str-config/config.json: hidden_size: expected an integer"),
        (("ruler", "--model", "mmx:{tmp}/no-config"), "no-config/config.json: vocab_size: missing (and 7 more"),
        (("ruler", "--batch-size", "0"), "bad batch size '0'"),
        (("ruler", "--dtype", "fp8"), "unknown dtype 'fp8'"),
        (("ruler", "--concurrency", "2"), "option 'concurrency' does not apply to native models"),
        (("ruler", "--samples", "0"), "bad sample count 0"),
        (("niah", "--depths", "0"), "depths must be at least 1"),
        (("niah", "--spacing", "cubic"), "unknown depth spacing 'cubic'"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_bad_input_is_one_line_and_exit_code_2(mmx, tmp_path, args, message):
    (tmp_path / "file").write_text("not a directory")
    tiny = PRESETS["tiny"].to_dict()
    for name, config in (("list-config", [1, 2]), ("str-config", {**tiny, "hidden_size": "64"}), ("no-config", {})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        (tmp_path / name / "model.safetensors").write_bytes(b"")  # weights are looked for first
    args = [a.format(tmp=tmp_path) for a in args]
    defaults = {"--model": "random:tiny", "--lengths": "1k", "--out": str(tmp_path / "out")}
    if "--max-len" in args:
        del defaults["--lengths"]
    extra = [x for flag, value in defaults.items() if flag not in args for x in (flag, value)]
    code, out, err = mmx("eval", *args, *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("out", ["mine", ""], ids=["a folder of the user's", "empty --out (the current folder)"])
def test_out_never_writes_over_a_users_files(mmx, tmp_path, monkeypatch, out):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summary.csv").write_text("mine\n")
    monkeypatch.chdir(folder if out == "" else tmp_path)
    code, _, err = mmx("eval", "ruler", "--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert "is not empty and holds no mmx eval run (summary.csv)" in err, err
    assert (
        sorted(p.name for p in folder.iterdir()) == ["summary.csv"] and (folder / "summary.csv").read_text() == "mine\n"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_it_is_one_line(mmx, tmp_path):
    code, _, err = mmx("eval", "ruler", "--model", "random:tiny", "--device", "cuda", "--out", tmp_path / "o")
    assert code == 2 and err == "error: CUDA is not available on this machine — use --device cpu\n"


def test_progress_bars_draw_cells_and_keep_notes_on_a_terminal():
    from rich.console import Console

    from mmx.commands.progress import BarProgress

    screen = io.StringIO()
    bars = BarProgress(Console(file=screen, force_terminal=True, width=120))
    bars.begin(total=4, done=1)
    bars.cell("vt", 4096, total=2, done=0)
    bars.advance(1)
    bars.note("skipping 8m: longer than the model's maximum context")
    bars.cell("qa_1", 4096, total=2, done=1)
    bars.advance(1)
    assert bars.bars.tasks[0].completed == 3 and [t.description for t in bars.bars.tasks][1:] == ["qa_1 @ 4k"]
    bars.end()
    assert "warning: skipping 8m: longer than the model's maximum context" in screen.getvalue()


def test_an_lm_eval_task_whose_data_is_missing_is_one_line(mmx, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "lost.yaml").write_text(
        "task: mmx_lost\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: "
        f"{tmp_path / 'missing.jsonl'}\ntest_split: test\noutput_type: generate_until\ndoc_to_text: q\n"
        "doc_to_target: a\nmetric_list:\n  - metric: exact_match\n"
    )
    args = ("--model", "random:tiny", "--tasks", "mmx_lost", "--include-path", tmp_path, "--out", tmp_path / "run")
    code, _, err = mmx("eval", "lm-eval", *args)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: a task's data is missing"), err
