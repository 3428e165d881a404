"""The Python API writes exactly what the CLI writes, and reads any run back as pandas frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mmx
from mmx.errors import MmxError

ARGS = {"model": "random:tiny", "tasks": ["niah_single_1", "vt"], "lengths": "1k", "samples": 2, "seed": 3}
CLI_ARGS = ("--model", "random:tiny", "--tasks", "niah_single_1,vt", "--lengths", "1k", "--samples", "2", "--seed", "3")


def _lines(run: Path) -> list[dict]:
    """samples.jsonl without the timings, which differ between any two runs."""
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


def test_evaluate_and_the_cli_write_the_same_run(mmx, tmp_path: Path) -> None:
    api = tmp_path / "api"
    results = __import__("mmx").evaluate(**ARGS, out=api)
    code, _, err = mmx("eval", "ruler", *CLI_ARGS, "--out", tmp_path / "cli", "--quiet")
    assert code == 0, err
    assert _lines(api) == _lines(tmp_path / "cli")
    api_meta = json.loads((api / "run.json").read_text())
    cli_meta = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert api_meta["params"] == cli_meta["params"]
    assert api_meta["command"] == [str(api) if a == str(tmp_path / "cli") else a for a in cli_meta["command"]]
    assert len(results.records) == 4


def test_a_run_started_from_python_resumes_from_the_cli(mmx, tmp_path: Path) -> None:
    run = tmp_path / "run"
    __import__("mmx").evaluate(**{**ARGS, "tasks": ["vt"]}, out=run)
    code, _, err = mmx("eval", "ruler", "--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--samples",
                       "2", "--seed", "3", "--out", run, "--quiet")  # fmt: skip
    assert code == 0, err
    assert "resuming run" in err
    assert len(_lines(run)) == 2


def test_load_run_gives_one_row_per_sample_and_the_score_table(tmp_path: Path) -> None:
    run = tmp_path / "run"
    mmx.evaluate(**ARGS, out=run)
    loaded = mmx.load_run(run)
    frame = loaded.to_frame()
    records = _lines(run)
    assert len(frame) == len(records)
    by_key = {(r["task"], r["length"], r["index"]): r for r in records}
    for row in frame.itertuples():
        record = by_key[(row.task, row.length, row.index)]
        assert (row.status, row.score, row.prediction, row.prompt_tokens) == (
            record["status"],
            record["score"],
            record["prediction"],
            record["prompt_tokens"],
        )
    assert set(frame["model"]) == {"tiny (random weights)"} and set(frame["suite"]) == {"ruler"}
    scores = loaded.scores()
    assert list(scores.columns) == [1024] and sorted(scores.index) == ["niah_single_1", "vt"]
    expected = frame.groupby("task")["score"].mean() * 100
    assert scores[1024].to_dict() == pytest.approx(expected.to_dict())


def test_bad_calls_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MmxError, match="unknown suite"):
        mmx.evaluate(model="random:tiny", suite="longbench")
    with pytest.raises(MmxError, match="not a run directory"):
        mmx.load_run(tmp_path)


def test_version_on_the_command_line_and_in_python(mmx) -> None:
    code, out, _ = mmx("--version")
    assert code == 0 and out.strip() == f"mmx {__import__('mmx').__version__}"
