"""Reports from complete, in-progress and partly failed runs: what they show and what they say is missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from mmx.commands.app import main
from mmx.errors import MmxError
from mmx.results.charts import all_charts
from mmx.results.console import print_tables
from mmx.results.markdown import report_markdown
from mmx.results.report import Report
from mmx.results.tables import all_tables, bench_table, summary_table, task_table

K = 1024


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `mmx …` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_in_progress_run_reports_what_it_has_and_what_is_missing(tmp_path: Path, synth: ModuleType) -> None:
    """Half of 16k is on disk (the run was stopped mid-length): the table marks it partial, the notes list the gaps."""
    path = synth.write_eval_run(
        tmp_path / "run",
        tasks=["vt", "cwe"],
        lengths=[4 * K, 8 * K, 16 * K],
        samples=4,
        keep=lambda task, length, index: length < 16 * K or (task == "vt" and index < 2),
    )
    report = Report.build([path])
    run = report.analyses[0].run
    assert not run.progress.complete and run.progress.status == "incomplete"
    assert run.progress.recorded == 18 and run.progress.expected == 24
    assert run.progress.short_cells == [("vt", 16 * K, 2, 4), ("cwe", 16 * K, 0, 4)]
    assert "18 of 24 samples" in run.progress.notes[0] and "vt 16k 2/4, cwe 16k 0/4" in run.progress.notes[0]

    tasks = task_table(report)
    by_task = {row.cells[0].text: [c.text for c in row.cells[1:]] for row in tasks.rows}
    assert by_task["cwe"][2] == "—"  # no sample yet
    assert by_task["vt"][2].endswith("*")  # 2 of 4 samples
    summary = summary_table(report).rows[0]
    assert summary.cells[3].text.endswith("*") and "partial" in summary.cells[3].tags
    # the 16k mean is vt's alone (cwe has nothing there yet)
    assert float(summary.cells[3].text[:-1]) == pytest.approx(run.cells[("vt", 16 * K)].mean, abs=0.05)


def test_oom_cells_show_as_oom_not_as_zero(tmp_path: Path, synth: ModuleType) -> None:
    path = synth.write_eval_run(
        tmp_path / "run", tasks=["vt", "cwe"], lengths=[4 * K, 8 * K], samples=2, oom=lambda t, n: n == 8 * K
    )
    report = Report.build([path])
    a = report.analyses[0]
    assert a.run.progress.complete and a.run.progress.status == "complete, with failures"
    assert "2 cell(s) ran out of memory: cwe 8k, vt 8k" in a.run.progress.notes
    assert [c.text for c in task_table(report).rows[0].cells[1:]][1] == "OOM"
    assert summary_table(report).rows[0].cells[2].text == "OOM"
    assert list(a.summary.means) == [4 * K]  # OOM is a missing measurement, not a score of zero


def test_lengths_beyond_the_models_context_are_not_missing(tmp_path: Path, synth: ModuleType) -> None:
    path = synth.write_eval_run(tmp_path / "run", tasks=["vt"], lengths=[4 * K, 8 * K], samples=2)
    meta = json.loads((path / "run.json").read_text())
    meta["model"]["max_context"] = 4 * K
    (path / "run.json").write_text(json.dumps(meta))
    # the runner skips 8k without writing records: drop what the synthetic writer put there
    lines = [line for line in (path / "samples.jsonl").read_text().splitlines() if json.loads(line)["length"] == 4 * K]
    (path / "samples.jsonl").write_text("\n".join(lines) + "\n")
    run = Report.build([path]).analyses[0].run
    assert run.progress.complete and run.progress.expected == 2
    assert any("longer than the model's maximum context (4k tokens)" in note for note in run.progress.notes)


def test_several_runs_side_by_side_with_reference_and_random_flag(tmp_path: Path, synth: ModuleType) -> None:
    a = synth.write_eval_run(tmp_path / "a", name="mmx-mini", lengths=[4 * K, 8 * K], samples=2)
    b = synth.write_eval_run(tmp_path / "b", name="mmx-mini", lengths=[4 * K, 8 * K, 16 * K], samples=2)
    c = synth.write_eval_run(tmp_path / "c", name="tiny", lengths=[4 * K], samples=1, random_weights=True)
    report = Report.build([a, b, c], references=["minimax-text-01"])
    tasks = task_table(report)
    assert tasks.groups == [
        ("", 1),
        ("mmx-mini [a] · mmx", 2),
        ("mmx-mini [b] · mmx", 3),
        ("tiny · mmx (random weights)", 1),
    ]
    assert len(tasks.columns) == 1 + 2 + 3 + 1
    summary = summary_table(report)
    assert summary.columns[1:4] == ["4k", "8k", "16k"]
    ref = summary.rows[-1]
    assert "reference" in ref.tags and ref.cells[0].text == "MiniMax-Text-01 (published; not comparable ‡)"
    assert [c.text for c in ref.cells[1:4]] == ["96.3", "96.1", "95.3"]
    assert ref.cells[4].text == "95.9"  # Avg over the table's lengths: (96.3 + 96.1 + 95.3) / 3
    assert "random" in summary.rows[2].tags


def test_runs_of_one_model_at_other_lengths_join_into_one_curve(
    tmp_path: Path, synth: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """4k–8k with 3 samples, then 16k with 1 (cwe's 16k cell missing): one row, one curve, the gap still named."""
    tasks = ["vt", "cwe"]
    short = synth.write_eval_run(tmp_path / "short", tasks=tasks, lengths=[4 * K, 8 * K], samples=3)
    long = synth.write_eval_run(
        tmp_path / "long", tasks=tasks, lengths=[16 * K], samples=1, keep=lambda task, length, index: task == "vt"
    )
    other = synth.write_eval_run(tmp_path / "other", name="tiny", tasks=tasks, lengths=[16 * K], samples=1)
    report = Report.build([long, short, other])
    joined, alone = (a.run for a in report.analyses)
    assert (joined.label, alone.label) == ("mmx-mini", "tiny")  # another model never joins
    assert joined.name == "short + long" and joined.expected_lengths == [4 * K, 8 * K, 16 * K]
    assert joined.params["samples"] == {"short": 3, "long": 1}
    assert list(report.analyses[0].means) == [4 * K, 8 * K, 16 * K]
    assert joined.progress.recorded == 13 and joined.progress.expected == 14 and not joined.progress.complete
    assert joined.progress.short_cells == [("cwe", 16 * K, 0, 1)]
    assert joined.progress.notes[0].startswith("long: incomplete: 1 of 2 samples")

    apart = Report.build([short, long], join=False)
    assert [a.run.label for a in apart.analyses] == ["mmx-mini [short]", "mmx-mini [long]"]
    code, out, _ = cli(["report", str(short), str(long), "--separate", "--markdown"], capsys)
    assert code == 0 and "mmx-mini [short]" in out and "mmx-mini [long]" in out


def test_runs_that_share_a_length_stay_apart(tmp_path: Path, synth: ModuleType) -> None:
    a = synth.write_eval_run(tmp_path / "a", tasks=["vt"], lengths=[4 * K, 8 * K], samples=1)
    b = synth.write_eval_run(tmp_path / "b", tasks=["vt"], lengths=[8 * K, 16 * K], samples=1)
    assert [x.run.label for x in Report.build([a, b]).analyses] == ["mmx-mini [a]", "mmx-mini [b]"]


def test_run_labels_in_brackets_reach_the_terminal(tmp_path: Path, synth: ModuleType) -> None:
    """Column blocks are headed by run labels such as "mmx-mini [run-a]"; rich must not read "[run-a]" as markup."""
    a = synth.write_eval_run(tmp_path / "run-a", tasks=["vt"], lengths=[4 * K], samples=1)
    b = synth.write_eval_run(tmp_path / "run-b", tasks=["vt"], lengths=[4 * K], samples=1)
    console = Console(width=200, record=True)
    print_tables([task_table(Report.build([a, b]))], console)
    text = console.export_text()
    assert "mmx-mini [run-a]" in text and "mmx-mini [run-b]" in text


def test_narrow_terminal_gets_whole_numbers(tmp_path: Path, synth: ModuleType) -> None:
    """Too wide for the console: one table per model block, then runs of columns; never a number cut to "…"."""
    lengths = [4 * K, 8 * K, 16 * K, 32 * K, 64 * K]
    paths = [synth.write_eval_run(tmp_path / d, tasks=["vt"], lengths=lengths, samples=1) for d in ("a", "b", "c")]
    tables = all_tables(Report.build(paths, references=["minimax-text-01"]))
    for table in tables:
        table.notes = []  # notes are prose (they may say "1…n"); only the tables are checked
    narrow, wide = Console(width=70, record=True), Console(width=250, record=True)
    print_tables(tables, narrow)
    print_tables(tables, wide)
    narrow_text, wide_text = narrow.export_text(), wide.export_text()
    assert "…" not in narrow_text and max(len(line) for line in narrow_text.splitlines()) <= 70
    assert narrow_text.count("Score per task and length") == 3 and wide_text.count("Score per task and length") == 1
    assert "RULER summary (1/" in narrow_text and "RULER summary (" not in wide_text
    for table in tables:  # every number is printed in full somewhere
        for row in table.rows:
            assert all(cell.text in narrow_text for cell in row.cells[1:])


def test_a_folder_of_runs_expands_to_its_run_directories(tmp_path: Path, synth: ModuleType) -> None:
    for name in ("b", "a"):
        synth.write_eval_run(tmp_path / "runs" / name, tasks=["vt"], lengths=[4 * K], samples=1)
    (tmp_path / "runs" / "notes").mkdir()  # not a run: skipped
    assert [a.run.path.name for a in Report.build([tmp_path / "runs"]).analyses] == ["a", "b"]


def test_labels_stay_unique_when_directory_names_repeat(tmp_path: Path, synth: ModuleType) -> None:
    a = synth.write_eval_run(tmp_path / "x" / "run", tasks=["vt"], lengths=[4 * K], samples=1)
    b = synth.write_eval_run(tmp_path / "y" / "run", tasks=["vt"], lengths=[4 * K], samples=1)
    runs = [x.run for x in Report.build([a, b]).analyses]
    assert [r.label for r in runs] == ["mmx-mini [run]", "mmx-mini [run] (2)"]
    assert [r.key for r in runs] == ["1-mmx-mini", "2-mmx-mini"]


def test_cli_terminal_markdown_and_csv(tmp_path: Path, synth: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    run = synth.write_eval_run(tmp_path / "run", tasks=["vt", "cwe"], lengths=[4 * K, 8 * K], samples=3)
    niah = synth.write_niah_run(tmp_path / "niah", [4 * K, 32 * K], [0.0, 50.0, 100.0])
    bench = synth.write_bench_run(tmp_path / "bench", [4 * K, 8 * K], oom_from=8 * K)
    lm = synth.write_lm_eval_run(tmp_path / "lm", {"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.05}})
    dirs = [str(p) for p in (run, niah, bench, lm)]

    code, out, _ = cli(["report", *dirs, "--reference", "minimax-text-01"], capsys)
    assert code == 0
    for text in ("RULER summary", "published; not comparable", "Needle in a haystack", "OOM", "0.5000 ± 0.0500"):
        assert text in out

    code, out, _ = cli(["report", *dirs, "--markdown", "--csv", str(tmp_path / "csv")], capsys)
    assert code == 0 and out.startswith("# mmx report")
    assert "| Model | 4k | 8k | Avg |" in out
    cells = Report.build([run]).analyses[0].run.cells
    with (tmp_path / "csv" / "scores.csv").open() as fh:
        rows = {(r["run"], r["task"], int(r["length"])): r for r in csv.DictReader(fh)}
    assert float(rows[("mmx-mini [run]", "vt", 8 * K)]["score"]) == pytest.approx(cells[("vt", 8 * K)].mean)
    with (tmp_path / "csv" / "bench.csv").open() as fh:
        statuses = [r["status"] for r in csv.DictReader(fh)]
    assert statuses == ["ok", "oom", "ok", "oom"]
    assert {p.name for p in (tmp_path / "csv").iterdir()} == {
        "scores.csv",
        "length_means.csv",
        "summary.csv",
        "niah.csv",
        "bench.csv",
        "lm_eval.csv",
    }


def test_bench_curves_leave_failures_off_the_plot(tmp_path: Path, synth: ModuleType) -> None:
    path = synth.write_bench_run(tmp_path / "bench", [4 * K, 8 * K, 16 * K], oom_from=16 * K, decode_batches=(1, 8))
    report = Report.build([path])
    series = {(s.bench, s.name): s for s in report.analyses[0].bench}
    assert list(series) == [("prefill", "mmx hybrid"), ("decode", "mmx hybrid"), ("decode", "mmx hybrid ×8")]
    assert [p.status for p in series[("decode", "mmx hybrid ×8")].points] == ["ok", "ok", "oom"]
    rows = [[c.text for c in row.cells] for row in bench_table(report.analyses[0]).rows]
    assert rows[0] == ["prefill", "mmx hybrid", "4k", "39,385", "0.102", "2.06", "42%", "ok"]
    assert rows[2] == ["prefill", "mmx hybrid", "16k", "—", "—", "—", "—", "OOM"]  # its 79.5 GB peak is not a result
    charts = all_charts(report)["bench"]
    assert [c.key for c in charts] == ["bench-prefill", "bench-decode"]  # one chart per bench kind, not per curve
    assert report.analyses[0].run.progress.status == "complete, with failures"


def test_lm_eval_run_without_results_says_so(tmp_path: Path, synth: ModuleType) -> None:
    path = synth.write_lm_eval_run(tmp_path / "lm", None)
    report = Report.build([path])
    assert report.analyses[0].run.progress.status == "incomplete"
    assert "lm-eval" not in {t.key for t in all_tables(report)}  # no empty results table
    assert "no lm_eval_results.json yet" in report_markdown(all_tables(report))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "/nonexistent/run"], "does not exist"),
        (["report", "{tmp}/empty"], "is not a run directory"),
        (["report", "{run}", "--reference", "llama-9"], "no published scores for 'llama-9'"),
        (["report", "{run}", "--threshold", "150"], "outside 0–100"),
    ],
    ids=["missing-dir", "not-a-run", "bad-reference", "bad-threshold"],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, synth: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run = synth.write_eval_run(tmp_path / "run", tasks=["vt"], lengths=[4 * K], samples=1)
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    code, _, err = cli(argv, capsys)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_unreadable_lm_eval_file_is_a_user_error(tmp_path: Path, synth: ModuleType) -> None:
    path = synth.write_lm_eval_run(tmp_path / "lm", {})
    (path / "lm_eval_results.json").write_text("{not json")
    with pytest.raises(MmxError, match="is not valid JSON"):
        Report.build([path])
