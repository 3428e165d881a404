"""`mmx eval` as a real process: a clean run, and a run killed mid-sweep (SIGKILL or Ctrl-C) then resumed, whose final
results must equal the clean run's with no sample written twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# One sample per generate call, so a kill lands between appended records with work still left.
N = 6
ARGS = ("--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--samples", str(N), "--batch-size", "1")


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mmx", "eval", "ruler", *ARGS, "--json", "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


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
            pytest.fail(f"the run ended (exit {proc.returncode}) before {count} sample(s) were written")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {count} sample(s) within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_killed_run_resumes_to_the_clean_result(clean, tmp_path, read_records, outcome, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for_lines(out / "samples.jsonl", 1, proc)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    written = len(read_records(out))
    assert 1 <= written < N
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and f"interrupted: rerun the same command with --out {out} to resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL

    again = subprocess.run(_command(out), capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed"] is True and report["new_samples"] == N - written
    records = read_records(out)
    assert len(records) == N and len({(r["task"], r["length"], r["index"]) for r in records}) == N
    assert outcome(records) == outcome(read_records(clean[0]))
    assert (out / "summary.csv").read_text() == (clean[0] / "summary.csv").read_text()
    assert report["cells"] == clean[1]["cells"]
