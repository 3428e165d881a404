"""Data-parallel sweeps on gloo: ranks split a run's samples, rank 0 writes them, and the run equals a one-process
run record for record (compared ignoring order, timings and batch sizes, which say how the work was cut).

The ranks are forked test processes with torchrun's environment (fast), except one end-to-end run of the real
command with `--devices cpu,cpu`, which starts torchrun itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from plugins.gloo import free_port, rank_environment

from mmx.workflows.evaluate.distributed import deal
from mmx.workflows.evaluate.request import build_request, resolve_tasks

N = 6
TASKS = "vt,qa_1"


def _request(out: Path, **options):
    tasks = resolve_tasks(TASKS, answer_prefix=True)
    return build_request(
        "ruler",
        tasks,
        [("--tasks", ",".join(tasks.tasks))],
        model="random:tiny",
        lengths="1k",
        samples=N,
        out=out,
        batch_size=1,  # one prompt per generate call: a kill lands between records
        device="cpu",
        **options,
    )


def _stable(record: dict) -> tuple:
    """A record without what depends on how the work was cut (timings, batch size) or on dict order."""
    kept = {k: v for k, v in record.items() if k not in ("timings", "batch_size")}
    return json.dumps(kept, sort_keys=True)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The same sweep in this process, without any torchrun environment."""
    from mmx.workflows.evaluate.run import run_eval

    out = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_eval(_request(out))
    finally:
        torch.set_num_threads(threads)
    return out


class _Bar:
    """A progress that remembers what it was told."""

    def __init__(self) -> None:
        self.begun: list[tuple[int, int]] = []
        self.advanced = 0

    def begin(self, total: int, done: int) -> None:
        self.begun.append((total, done))

    def cell(self, task: str, length: int, total: int, done: int) -> None:
        pass

    def advance(self, count: int) -> None:
        self.advanced += count

    def note(self, message: str) -> None:
        pass

    def end(self) -> None:
        pass


def _rank_eval(rank: int, world: int, out: Path, options: dict) -> None:
    from mmx.workflows.evaluate.run import run_eval

    bar = _Bar()
    outcome = run_eval(_request(out, **options), bar)
    assert (outcome is not None) == (rank == 0)
    if outcome is not None:  # rank 0's bar is the whole job's: every rank's samples advance it
        assert outcome.result.new_records == len(_records(out)) == bar.advanced == 2 * N
        assert bar.begun == [(2 * N, 0)] and len(outcome.result.records) == 2 * N  # one bar, begun once
    else:
        assert bar.begun == [] and bar.advanced == 0


def _same_run(out: Path, reference: Path) -> None:
    records = _records(out)
    assert len(records) == len({(r["task"], r["length"], r["index"]) for r in records}) == 2 * N  # nothing twice
    assert Counter(map(_stable, records)) == Counter(map(_stable, _records(reference)))
    assert (out / "summary.csv").read_text() == (reference / "summary.csv").read_text()


def test_the_deal_spreads_every_length_evenly_longest_first():
    items = [(task, length, i) for length in (4096, 1024, 65536) for task in ("a", "b") for i in range(5)]
    owner = deal(items, 4)
    assert sorted(owner) == sorted(items)
    first = sorted(items, key=lambda item: -item[1])[:4]
    assert [owner[item] for item in first] == [0, 1, 2, 3]  # the longest prompts go out first, one per replica
    for length in (4096, 1024, 65536):
        counts = Counter(owner[item] for item in items if item[1] == length)
        assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize(("world", "options"), [(2, {}), (4, {"tp": 2})], ids=["dp2", "tp2xdp2"])
def test_a_split_sweep_writes_what_one_process_writes(gloo_ranks, one_process, tmp_path, world, options):
    out = tmp_path / "run"
    gloo_ranks(_rank_eval, world, out, options)
    _same_run(out, one_process)
    launch = json.loads((out / "run.json").read_text())["launch"]
    assert launch == {"world_size": world, "tensor_parallel": options.get("tp", 1), "data_parallel": 2}


def _rank_run(rank: int, world: int, port: int, out: Path) -> None:
    from mmx.workflows.evaluate.run import run_eval

    rank_environment(rank, world, port)
    torch.set_num_threads(1)
    run_eval(_request(out))


def _start(out: Path) -> mp.ProcessContext:
    return mp.start_processes(_rank_run, args=(2, free_port(), out), nprocs=2, join=False, start_method="fork")


def test_a_rank_killed_mid_sweep_loses_nothing_on_resume(one_process, tmp_path):
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = _start(out)
        deadline = time.monotonic() + 120
        while not (out / "samples.jsonl").exists() or len(_records(out)) < 3:
            assert time.monotonic() < deadline and all(p.is_alive() for p in job.processes), "no records came"
            time.sleep(0.01)
        os.kill(job.processes[1].pid, signal.SIGKILL)
        job.processes[1].join()
        for process in job.processes:  # torchrun ends the job when a rank dies; so does this test
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        written = len(_records(out))
        assert 3 <= written < 2 * N

        again = _start(out)
        while not again.join():
            pass
    finally:
        torch.set_num_threads(threads)
    _same_run(out, one_process)


def test_devices_start_the_job_through_torchrun(one_process, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mmx", "eval", "ruler", "--model", "random:tiny", "--tasks", TASKS]
    command += ["--lengths", "1k", "--samples", str(N), "--batch-size", "1", "--out", str(out), "--json"]
    done = subprocess.run(
        [*command, "--devices", "cpu,cpu"], capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # only rank 0 prints
    assert report["new_samples"] == 2 * N and report["resumed"] is False
    _same_run(out, one_process)
