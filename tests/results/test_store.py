"""The run store at its boundary: a run's identity on every record, refusing a directory whose records belong to
another run, records of the wrong shape reported and skipped, atomic summaries, and the one-writer lock."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmx.errors import MmxError
from mmx.files import atomic_write
from mmx.results.lock import LOCK_FILE, RunLock
from mmx.results.runs import Run
from mmx.results.store import IDENTITY, SAMPLES_FILE, RunStore, run_identity

PARAMS = {"tasks": ["vt"], "lengths": [1024], "samples": 2, "seed": 0, "model": {"spec": "random:tiny"}}


def _meta(model: str = "random:tiny") -> dict:
    """A run.json as `mmx eval` writes it (the parts the store reads)."""
    return {
        "kind": "eval",
        "command": ["mmx", "eval"],
        "model": {"spec": model},
        "params": {**PARAMS, "model": {"spec": model}},
    }


def sample(task: str, length: int, index: int, score: float | None) -> dict:
    return {"task": task, "length": length, "index": index, "status": "ok", "score": score, "prediction": "x"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / SAMPLES_FILE).read_text().splitlines()]


def _filled(path: Path, model: str = "random:tiny") -> RunStore:
    store = RunStore(path)
    store.open(_meta(model))
    for index in range(2):
        store.append_sample(sample("vt", 1024, index, 1.0))
    return store


def test_every_record_carries_the_identity_in_run_json(tmp_path: Path) -> None:
    store = _filled(tmp_path / "run")
    identity = json.loads((store.dir / "run.json").read_text())[IDENTITY]
    assert identity == run_identity("eval", _meta()["params"]) == store.run_id
    assert [r[IDENTITY] for r in _lines(store.dir)] == [identity, identity]
    assert run_identity("eval", _meta("random:tiny:1")["params"]) != identity


def test_a_deleted_run_json_rewritten_by_another_run_is_refused_not_relabelled(tmp_path: Path) -> None:
    store = _filled(tmp_path / "run")
    (store.dir / "run.json").unlink()
    with pytest.raises(MmxError, match="holds samples of another run but no run.json"):
        RunStore(store.dir).open(_meta("random:tiny:1"))
    assert not (store.dir / "run.json").exists()  # nothing was relabelled
    assert RunStore(store.dir).open(_meta()) is True  # the same run takes its samples back
    assert len(RunStore(store.dir).samples()) == 2


def test_a_replaced_run_json_is_refused_by_resume_and_report(tmp_path: Path) -> None:
    store = _filled(tmp_path / "run")
    other = _filled(tmp_path / "other", "random:tiny:1")
    (store.dir / "run.json").write_bytes((other.dir / "run.json").read_bytes())
    with pytest.raises(MmxError, match="holds records of another run"):
        RunStore(store.dir).open(_meta("random:tiny:1"))
    with pytest.raises(MmxError, match="holds records of another run"):
        Run.load(store.dir)


def test_samples_without_identity_and_without_run_json_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / SAMPLES_FILE).write_text(json.dumps(sample("vt", 1024, 0, 1.0)) + "\n")
    with pytest.raises(MmxError, match="another run"):
        RunStore(folder).open(_meta())


def test_a_run_from_before_identities_still_loads_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(_meta()))  # no run_id, as older mmx wrote it
    (folder / SAMPLES_FILE).write_text(json.dumps(sample("vt", 1024, 0, 1.0)) + "\n")
    store = RunStore(folder)
    assert store.open(_meta()) is True and store.run_id is None
    store.append_sample(sample("vt", 1024, 1, 0.0))
    assert IDENTITY not in _lines(folder)[1]
    assert len(Run.load(folder).samples) == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{}", "task: missing"),
        ('{"task": "vt", "length": "1k", "index": 0}', "length: expected an integer, got '1k'"),
        ('{"task": "vt", "length": null, "index": 0}', "length: expected an integer, got null"),
        ('{"task": "vt", "length": 1024, "index": 0, "score": "high"}', "score: expected a number, got 'high'"),
        ('{"task": "vt", "length": 1024, "index": 0, "score": 7}', "score: expected a score between 0 and 1"),
        ('{"task": "vt", "length": 1024, "index": -1}', "index: expected a number at least 0"),
        ("[1, 2]", "not a JSON object"),
        ('{"task": "vt", "len', "corrupt line"),
    ],
)
def test_a_line_that_cannot_be_a_sample_is_reported_and_its_sample_runs_again(
    tmp_path: Path, line: str, problem: str
) -> None:
    store = _filled(tmp_path / "run")
    real = _lines(store.dir)
    bad_first = line + "\n" + (store.dir / SAMPLES_FILE).read_text()  # a bad copy of sample 0 must not win
    (store.dir / SAMPLES_FILE).write_text(bad_first)
    notes: list[str] = []
    reopened = RunStore(store.dir, on_corrupt=notes.append)
    assert reopened.open(_meta()) is True
    assert reopened.samples() == real
    assert len(notes) == 1 and problem in notes[0] and ":1:" in notes[0]
    with pytest.warns(UserWarning, match=f"samples.jsonl:1: skipping .*{re.escape(problem)}"):
        assert len(Run.load(store.dir).samples) == 2


@pytest.mark.parametrize(
    ("run_json", "message"),
    [
        ("[1]", "run.json: the top level: expected a JSON object"),
        ('{"params": "x"}', "run.json: params: expected a JSON object, got 'x'"),
        ('{"kind": 3}', "run.json: kind: expected a string"),
        ('{"params": {"lengths": [0]}}', "params.lengths.0"),
        ("{nope", "run.json is not valid JSON"),
    ],
)
def test_a_run_json_of_the_wrong_shape_is_one_error_naming_the_field(
    tmp_path: Path, run_json: str, message: str
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(run_json)
    with pytest.raises(MmxError, match=message.replace(".", r"\.")) as err:
        Run.load(folder)
    assert "\n" not in str(err.value) and "delete" not in str(err.value)


def test_a_samples_file_that_is_a_folder_is_one_error(tmp_path: Path) -> None:
    store = _filled(tmp_path / "run")
    (store.dir / SAMPLES_FILE).unlink()
    (store.dir / SAMPLES_FILE).mkdir()
    with pytest.raises(MmxError, match="samples.jsonl: Is a directory"):
        Run.load(store.dir)


def test_a_failed_atomic_write_keeps_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("the previous report")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mmx.files.os.fsync", disk_full)
    with pytest.raises(MmxError, match="No space left on device — free some disk space, then rerun"):
        atomic_write(target, "the new report")
    assert target.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_appending_to_a_full_disk_is_one_error_with_the_resume_hint(tmp_path: Path) -> None:
    store = _filled(tmp_path / "run")
    (store.dir / SAMPLES_FILE).unlink()
    (store.dir / SAMPLES_FILE).symlink_to("/dev/full")
    with pytest.raises(MmxError, match="No space left on device — free some disk space, then rerun"):
        store.append_sample(sample("vt", 1024, 0, 1.0))


def test_the_lock_refuses_a_second_writer_and_names_the_first(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with RunLock(folder, ["mmx", "eval", "ruler", "--out", str(folder)]):
        with pytest.raises(MmxError, match=rf"in use by process {os.getpid()} on .*`mmx eval ruler --out"):
            RunLock(folder).acquire()
        holder = subprocess.run(  # another process is refused the same way
            [sys.executable, "-c", f"from mmx.results.lock import RunLock; RunLock({str(folder)!r}).acquire()"],
            capture_output=True,
            text=True,
        )
        assert holder.returncode != 0 and f"in use by process {os.getpid()}" in holder.stderr
        (folder / "run.json").write_text("{}")
    with RunLock(folder):  # released on the way out
        pass
    assert (folder / "run.json").exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    code = (
        f"from mmx.results.lock import RunLock; lock = RunLock({str(folder)!r}).acquire(); print('held', flush=True); "
    )
    holder = subprocess.Popen([sys.executable, "-c", code + "import time; time.sleep(60)"], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    with pytest.raises(MmxError, match=f"in use by process {holder.pid}"):
        RunLock(folder).acquire()
    holder.kill()
    holder.wait()
    with RunLock(folder):
        assert (folder / LOCK_FILE).exists()


def test_a_lock_that_created_its_folder_removes_it_when_nothing_was_written(tmp_path: Path) -> None:
    with RunLock(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with RunLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()


def test_a_sample_recorded_twice_differently_is_reported_and_the_first_counts(tmp_path: Path) -> None:
    store = _filled(tmp_path / "run")
    first = _lines(store.dir)[0]
    with (store.dir / SAMPLES_FILE).open("a") as fh:
        fh.write(json.dumps({**first, "score": 0.0}) + "\n")
    notes: list[str] = []
    assert RunStore(store.dir, on_corrupt=notes.append).samples()[0] == first
    assert notes == [
        f"{store.dir / SAMPLES_FILE}: vt at length 1024 #0 is recorded twice, differently; the first record counts"
    ]
