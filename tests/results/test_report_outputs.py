"""`mmx report` outputs never replace its inputs or a user's files, and a failed write leaves the previous report
whole."""

from __future__ import annotations

import errno
from pathlib import Path
from types import ModuleType

import pytest

from mmx.results.store import RunStore


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_csv_into_the_run_itself_is_refused(mmx, tmp_path: Path, synth: ModuleType) -> None:
    run = synth.write_eval_run(tmp_path / "run", lengths=(4096,), samples=1)
    RunStore(run).write_summary([{"task": "vt", "length": 4096, "n": 1, "score": 50.0}])
    before = _files(run)
    code, out, err = mmx("report", run, "--csv", run)
    assert code == 2 and out == "" and err.count("\n") == 1 and "is a run directory" in err
    assert _files(run) == before


def test_html_over_a_users_file_is_refused_and_over_its_own_report_allowed(
    mmx, tmp_path: Path, synth: ModuleType
) -> None:
    run = synth.write_eval_run(tmp_path / "run", lengths=(4096,), samples=1)
    notes = tmp_path / "notes.html"
    notes.write_text("<html>mine</html>")
    code, _, err = mmx("report", run, "--html", notes, "--quiet")
    assert code == 2 and "exists and is not a report mmx wrote" in err and notes.read_text() == "<html>mine</html>"
    report = tmp_path / "report.html"
    assert mmx("report", run, "--html", report, "--quiet")[0] == 0
    assert mmx("report", run, "--html", report, "--quiet")[0] == 0  # its own earlier report is replaced


def test_a_failed_html_write_keeps_the_previous_report(
    mmx, tmp_path: Path, synth: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = synth.write_eval_run(tmp_path / "run", lengths=(4096,), samples=1)
    report = tmp_path / "report.html"
    assert mmx("report", run, "--html", report, "--quiet")[0] == 0
    previous = report.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mmx.files.os.fsync", disk_full)
    code, _, err = mmx("report", run, "--html", report, "--quiet")
    assert code == 2 and err.count("\n") == 1 and "No space left on device — free some disk space" in err
    assert report.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "run"]
