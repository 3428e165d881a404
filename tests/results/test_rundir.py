"""Where mmx may write: `--out` is new, empty or a run of the same kind; report outputs never replace a user's files or
a run's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmx.errors import MmxError
from mmx.results.lock import LOCK_FILE
from mmx.results.rundir import check_csv_target, check_html_target, check_out_dir


def _run(folder: Path, kind: str = "eval") -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"kind": kind, "params": {}}))
    (folder / "samples.jsonl").write_text("")
    return folder


def test_new_empty_and_same_kind_directories_are_accepted(tmp_path: Path) -> None:
    check_out_dir(tmp_path / "new" / "deeper", "eval")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / LOCK_FILE).write_text("")  # a lock left by an earlier run does not count as content
    check_out_dir(tmp_path / "empty", "eval")
    check_out_dir(_run(tmp_path / "run"), "eval")
    check_out_dir(_run(tmp_path / "bench", "bench"), "bench")
    samples_only = tmp_path / "lost-run-json"
    samples_only.mkdir()
    (samples_only / "samples.jsonl").write_text("")  # the store then checks the samples' identity
    (samples_only / "summary.csv").write_text("")
    check_out_dir(samples_only, "eval")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.json").write_text("{}")
    check_out_dir(tmp_path / "train", "train")


@pytest.mark.parametrize(
    ("layout", "kind", "message"),
    [
        ({"summary.csv": "mine"}, "eval", r"is not empty and holds no mmx eval run \(summary.csv\)"),
        ({"notes.txt": "mine", "samples.jsonl": ""}, "eval", r"holds no mmx eval run \(notes.txt\)"),
        ({"a": "", "b": "", "c": "", "d": ""}, "eval", r"\(a, b, c …\)"),
        ({"run.json": '{"kind": "bench"}'}, "eval", "holds a run of kind 'bench', not 'eval'"),
        ({"run.json": '{"kind": "eval"}'}, "train", "holds no mmx train run"),
        ({"train.json": "{}"}, "eval", "holds no mmx eval run"),
        ({"run.json": "[1]"}, "eval", "run.json: the top level: expected a JSON object"),
    ],
)
def test_anything_else_is_refused_before_a_file_is_touched(
    tmp_path: Path, layout: dict[str, str], kind: str, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name, text in layout.items():
        (out / name).write_text(text)
    with pytest.raises(MmxError, match=message):
        check_out_dir(out, kind)
    assert {p.name: p.read_text() for p in out.iterdir()} == layout


def test_a_file_an_unwritable_parent_and_an_overlong_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(MmxError, match="is a file, not a directory"):
        check_out_dir(tmp_path / "file", "eval")
    with pytest.raises(MmxError, match="is not a writable directory"):
        check_out_dir(tmp_path / "file" / "run", "eval")
    with pytest.raises(MmxError, match="(File name too long|choose a shorter path)"):
        check_out_dir(tmp_path / ("a" * 300), "eval")


def test_html_reports_replace_only_earlier_reports(tmp_path: Path) -> None:
    check_html_target(tmp_path / "new.html")
    earlier = tmp_path / "report.html"
    earlier.write_text('<!doctype html><html><head><meta name="generator" content="mmx 0.1.0"></head></html>')
    check_html_target(earlier)
    mine = tmp_path / "mine.html"
    mine.write_text("<html>my notes</html>")
    with pytest.raises(MmxError, match="exists and is not a report mmx wrote"):
        check_html_target(mine)
    run = _run(tmp_path / "run")
    with pytest.raises(MmxError, match="is not a report mmx wrote"):
        check_html_target(run / "run.json")
    with pytest.raises(MmxError, match="is a directory"):
        check_html_target(run)


def test_csv_files_never_land_in_a_run_or_over_a_users_file(tmp_path: Path) -> None:
    headers = {"scores.csv": ["run", "task", "score"], "summary.csv": ["run", "avg"]}
    run = _run(tmp_path / "run")
    with pytest.raises(MmxError, match="is a run directory"):
        check_csv_target(run, headers)
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "notebook.ipynb").write_text("{}")  # other names are left alone
    check_csv_target(folder, headers)
    (folder / "scores.csv").write_text("run,task,score\r\nold,vt,1\r\n")  # an earlier report's file
    check_csv_target(folder, headers)
    (folder / "summary.csv").write_text("mine\n")
    with pytest.raises(MmxError, match="summary.csv exists and is not a CSV file mmx wrote"):
        check_csv_target(folder, headers)
