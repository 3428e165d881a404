"""`mmx eval` and `mmx eval lm-eval` as real processes: a clean run, and a run killed (SIGKILL or Ctrl-C) at a random
point then resumed, whose final results must equal the clean run's with no sample lost or written twice; while a run
is going, a second one on its directory is refused.

The kill point is drawn at random (from `MMX_KILL_SEED` when set, so a failure can be replayed); the seed is in every
assertion message.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmx.results.store import read_jsonl

SEED = int(os.environ.get("MMX_KILL_SEED", time.time_ns() % 1_000_000))
# One sample per generate call, so a kill lands between appended records with work still left.
N = 6
ARGS = ("--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--samples", str(N), "--batch-size", "1")
MC_DOCS = [("2+2", ["3", "4"], 1), ("sky", ["blue", "green"], 0)]
GEN_DOCS = [(f"count to {n}", " ".join(map(str, range(1, n + 1)))) for n in range(3, 7)]
LM_EVAL_REQUESTS = sum(len(choices) for _, choices, _ in MC_DOCS) + len(GEN_DOCS)  # one answer logged per request
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
{body}
"""
MC_BODY = """output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc"""
GEN_BODY = """output_type: generate_until
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 32
metric_list:
  - metric: exact_match"""


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mmx", "eval", "ruler", *ARGS, "--json", "--out", str(out)]


def _env(tmp: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    if tmp is not None:  # lm-eval loads its JSONL through `datasets`, whose cache goes here
        env["HF_DATASETS_CACHE"] = str(tmp / "datasets-cache")
    return env


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run as a subprocess: its directory and its parsed --json output."""
    out = tmp_path_factory.mktemp("clean") / "run"
    done = subprocess.run(_command(out), capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def test_a_subprocess_run_prints_json_and_writes_the_run(clean, read_records):
    out, report = clean
    assert report["new_samples"] == N and [c["task"] for c in report["cells"]] == ["vt"]
    assert len(read_records(out)) == N
    assert (out / "summary.csv").read_text().startswith(f"task,length,n,score\nvt,1024,{N},")


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {count} line(s) were written (seed {SEED})")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {count} line(s) within {timeout} s")


def _interrupt(proc: subprocess.Popen, sig: signal.Signals, out: Path) -> str:
    """Send `sig`, wait for the process, and check it ended as that signal should end it; returns its stderr."""
    assert proc.poll() is None, f"the run finished before it could be interrupted (seed {SEED})"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert f"interrupted: rerun the same command with --out {out} to resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    return err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_killed_run_resumes_to_the_clean_result(clean, tmp_path, read_records, outcome, mmx, sig):
    out = tmp_path / "run"
    kill_after = random.Random(f"{SEED}-{sig.name}").randrange(1, N - 1)  # two samples left: the run is going
    proc = subprocess.Popen(_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for_lines(out / "samples.jsonl", kill_after, proc)
    code, _, err = mmx("eval", "ruler", *ARGS, "--out", out)  # a second writer while the first one runs
    assert code == 2 and err.count("\n") == 1 and f"is in use by process {proc.pid}" in err, err
    _interrupt(proc, sig, out)
    written = len(read_records(out))
    assert 1 <= written < N, f"seed {SEED}"

    again = subprocess.run(_command(out), capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed"] is True and report["new_samples"] == N - written, f"seed {SEED}"
    records = read_records(out)
    assert len(records) == N and len({(r["task"], r["length"], r["index"]) for r in records}) == N
    assert outcome(records) == outcome(read_records(clean[0]))
    assert (out / "summary.csv").read_text() == (clean[0] / "summary.csv").read_text()
    assert report["cells"] == clean[1]["cells"]


@pytest.fixture(scope="module")
def lm_eval_tasks(tmp_path_factory) -> Path:
    """An include directory with a multiple-choice and a generation task over local JSONL."""
    pytest.importorskip("lm_eval")
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    mc = [{"question": q, "choices": choices, "answer": gold} for q, choices, gold in MC_DOCS]
    gen = [{"question": q, "answer": gold} for q, gold in GEN_DOCS]
    for name, rows, body in (("mmx_kill_mc", mc, MC_BODY), ("mmx_kill_gen", gen, GEN_BODY)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data, body=body))
    return folder


def _lm_eval_command(tasks: Path, out: Path) -> list[str]:
    names = "mmx_kill_mc,mmx_kill_gen"
    flags = ["--model", "random:tiny", "--tasks", names, "--include-path", str(tasks), "--batch-size", "1"]
    return [sys.executable, "-m", "mmx", "eval", "lm-eval", *flags, "--quiet", "--json", "--out", str(out)]


def _lm_eval_outcome(out: Path) -> tuple[dict, list]:
    results = json.loads((out / "lm_eval_results.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return results, sorted((s["task"], s["index"], s["prediction"], s["score"]) for s in samples)


@pytest.fixture(scope="module")
def lm_eval_clean(lm_eval_tasks, tmp_path_factory) -> Path:
    """An uninterrupted lm-eval run as a subprocess."""
    out = tmp_path_factory.mktemp("lm-eval-clean") / "run"
    env = _env(out.parent)
    done = subprocess.run(_lm_eval_command(lm_eval_tasks, out), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_killed_lm_eval_run_resumes_to_the_clean_result(lm_eval_tasks, lm_eval_clean, tmp_path, sig):
    out, env = tmp_path / "run", _env(tmp_path)
    # at least three answers left to compute when the signal lands, so the run is still going
    kill_after = random.Random(f"{SEED}-lm-eval-{sig.name}").randrange(1, LM_EVAL_REQUESTS - 2)
    command = _lm_eval_command(lm_eval_tasks, out)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_lines(out / "lm_eval_requests.jsonl", kill_after, proc, timeout=600)
    _interrupt(proc, sig, out)
    assert not (out / "lm_eval_results.json").exists(), f"seed {SEED}"

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed"] is True
    assert _lm_eval_outcome(out) == _lm_eval_outcome(lm_eval_clean), f"seed {SEED}"
    answers = [r["key"] for r in read_jsonl(out / "lm_eval_requests.jsonl", on_corrupt=lambda _: None)]  # torn: none
    assert len(answers) == len(set(answers)) == LM_EVAL_REQUESTS, f"seed {SEED}"
