"""Published rows beside measured runs: a plain "not comparable" mark unless the run used RULER's own prompts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from mmx.results.markdown import report_markdown
from mmx.results.report import Report
from mmx.results.tables import all_tables, summary_table

RULER_SOURCE = {"source": "ruler:/data/ruler", "substitutes": [], "comparable": True, "not_comparable_because": None}
MMX_SOURCE = {
    "source": "mmx",
    "substitutes": ["essay haystack: mmx's generated prose instead of Paul Graham's essays"],
    "comparable": False,
    "not_comparable_because": "mmx's own prompts, with substitutes",
}


def _reference_row(report: Report):
    table = summary_table(report)
    assert table is not None
    return next(row for row in table.rows if "reference" in row.tags), table


def test_reference_beside_an_mmx_run_is_marked_not_comparable(tmp_path: Path, synth: ModuleType) -> None:
    run = synth.write_eval_run(tmp_path / "mmx", source=MMX_SOURCE)
    row, table = _reference_row(Report.build([run], references=["minimax-text-01"]))
    assert "not comparable" in row.cells[0].text and "not-comparable" in row.tags
    why = "not comparable: mmx-mini · mmx: mmx's own prompts, with substitutes"
    assert any(why in note for note in table.notes), table.notes
    mine = next(r for r in table.rows if "reference" not in r.tags)
    assert mine.cells[0].text.endswith("†") and "substitutes" in mine.tags  # its RULER mean used substitutes
    assert "not comparable" in report_markdown(all_tables(Report.build([run], references=["minimax-text-01"])))


def test_reference_beside_a_ruler_run_is_not_marked(tmp_path: Path, synth: ModuleType) -> None:
    run = synth.write_eval_run(tmp_path / "ruler", source=RULER_SOURCE)
    row, table = _reference_row(Report.build([run], references=["minimax-text-01"]))
    assert row.cells[0].text == "MiniMax-Text-01 (published, not measured)" and "not-comparable" not in row.tags
    assert not any("not comparable" in note for note in table.notes)
    assert "RULER data" in table.rows[0].cells[0].text  # runs are labelled by their prompt source


def test_a_run_from_before_sources_counts_as_mmx(tmp_path: Path, synth: ModuleType) -> None:
    run = synth.write_eval_run(tmp_path / "old")
    row, _ = _reference_row(Report.build([run], references=["minimax-text-01"]))
    assert "not comparable" in row.cells[0].text


def test_long_labels_are_shortened_in_the_summary_but_whole_in_runs(tmp_path: Path, synth: ModuleType) -> None:
    name = "a-very-long-model-name-from-some-hub-organisation-v2"
    run = synth.write_eval_run(tmp_path / "long", name=name, source=RULER_SOURCE)
    report = Report.build([run])
    summary = summary_table(report)
    assert summary is not None and "…" in summary.rows[0].cells[0].text and len(summary.rows[0].cells[0].text) <= 36
    runs = next(t for t in all_tables(report) if t.key == "runs")
    assert name in runs.rows[0].cells[0].text
