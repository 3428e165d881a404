"""`mmx eval ruler --source ruler:DIR` and `-o` task options, end to end on random tiny weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

RULER_FILES = "vt,qa_1"


def _ruler_metric(metric: str, prediction: str, refs: list[str]) -> float:
    """RULER's scripts/eval metric for one row, written out: post-process, lower-case containment."""
    text = re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip().lower()
    found = [r.lower() in text for r in refs]
    return sum(found) / len(found) if metric == "all" else float(any(found))


def test_ruler_files_run_score_and_resume(mmx, ruler_folder: Path, tmp_path: Path, read_records) -> None:
    out = tmp_path / "run"
    args = ("eval", "ruler", "--model", "random:tiny", "--source", f"ruler:{ruler_folder}", "--out", out, "--json")
    code, stdout, err = mmx(*args)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["lengths"] == [1024] and report["new_samples"] == 4  # every row of every task by default
    records = read_records(out)
    rows = {
        task: [json.loads(x) for x in (ruler_folder / task / "validation.jsonl").read_text().splitlines()]
        for task in RULER_FILES.split(",")
    }
    for record in records:
        row = rows[record["task"]][record["index"]]
        assert record["references"] == row["outputs"] and record["metadata"]["ruler_length"] == row["length"]
        metric = "part" if record["task"] == "qa_1" else "all"
        assert record["score"] == _ruler_metric(metric, record["prediction"], row["outputs"])
    meta = json.loads((out / "run.json").read_text())
    assert meta["params"]["source"]["source"] == f"ruler:{ruler_folder}" and "--source" in meta["command"]
    code, stdout, _ = mmx(*args)  # resume: nothing left to run, nothing changes
    assert code == 0 and json.loads(stdout)["new_samples"] == 0 and len(read_records(out)) == 4
    code, _, err = mmx("eval", "ruler", "--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--out", out)
    assert code == 2 and "error:" in err  # another source on the same directory is refused


def test_corpus_option_changes_prompts_and_identity(mmx, tmp_path: Path, read_records) -> None:
    essays = tmp_path / "essays"
    essays.mkdir()
    (essays / "one.txt").write_text(" ".join(f"Sentence {i} of a local essay about rivers." for i in range(400)))
    base = ("eval", "ruler", "--model", "random:tiny", "--tasks", "niah_single_2", "--lengths", "1k", "--samples", "1")
    assert mmx(*base, "--out", tmp_path / "builtin")[0] == 0
    code, _, err = mmx(*base, "-o", f"corpus={essays}", "--out", tmp_path / "local")
    assert code == 0, err
    builtin, local = read_records(tmp_path / "builtin")[0], read_records(tmp_path / "local")[0]
    assert builtin["prompt_hash"] != local["prompt_hash"]
    params = json.loads((tmp_path / "local" / "run.json").read_text())["params"]
    assert params["task_options"] == {"niah_single_2": {"corpus": str(essays)}}
    assert params["source"]["essays"] == [str(essays)] and params["source"]["substitutes"] == []
    code, _, err = mmx(*base, "-o", f"corpus={essays}", "--out", tmp_path / "builtin")
    assert code == 2 and "error:" in err  # options are part of the run's identity: no mixing


def test_unknown_or_unused_option_is_exit_2(mmx, tmp_path: Path) -> None:
    base = ("eval", "ruler", "--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--out", tmp_path / "x")
    code, _, err = mmx(*base, "-o", "colour=blue")
    assert code == 2 and "no selected task takes option 'colour'" in err and len(err.strip().splitlines()) == 1
    code, _, err = mmx("eval", "niah", "--model", "random:tiny", "--lengths", "1k", "-o", "data=x.json")
    assert code == 2 and "option 'data'" in err
