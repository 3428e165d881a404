"""Report tables as plain data (headers, rows of text cells with tags), so the terminal, Markdown and HTML renderers
and the tests all see the same numbers; a renderer only decides how a tag looks.

Cell tags: "pass"/"fail" (a length mean above/below the threshold), "effective" (the effective length), "partial"
(fewer samples or tasks than asked for, also marked "*" in the text), "oom", "missing", "error", "strong" (a headline
figure), "beyond" (longer than the model's maximum context, so never run). Row tags: "reference" (published, not
measured), "random" (untrained weights), "mean".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmx.results.aggregate import CellScore, LengthMean, Summary, summarize
from mmx.results.report import Report, RunAnalysis
from mmx.results.runs import NIAH_TASK, Run
from mmx.sizes import format_size

PARTIAL_MARK = "*"
MISSING = "—"
BEYOND = "n/a"
BEYOND_NOTE = f"{BEYOND}: longer than the model's maximum context, so not run."


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, the 0–100 score behind it (for colour scales) and tags that say what it is."""

    text: str
    value: float | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    tags: tuple[str, ...] = ()


@dataclass
class Table:
    """`groups` are (heading, span) pairs over the columns, left to right: the per-model column blocks."""

    key: str
    title: str
    columns: list[str]
    rows: list[Row]
    groups: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_columns: int = 1  # how many leading columns hold words (left-aligned); the rest hold numbers

    def headed_columns(self) -> list[tuple[str, bool, str]]:
        """(block heading, whether the column opens its block, column name) per column, for formats without
        spanning headers; columns outside any block have heading ""."""
        out: list[tuple[str, bool, str]] = []
        for label, span in self.groups:
            out += [(label, i == 0, self.columns[len(out)]) for i in range(span)]
        return out


def fmt_score(value: float) -> str:
    return f"{value:.1f}"


LABEL_CHARS = 34  # longer run labels are shortened in table rows; the Runs section keeps them whole
SUBSTITUTE_MARK = "†"


def run_title(run: Run) -> str:
    """A run's label with its prompt source and the untrained-weights flag, as every table names it."""
    title = run.label
    if run.source_name and not title.endswith(f"· {run.source_name}"):
        title = f"{title} · {run.source_name}"
    flagged = run.random_weights and "random weights" not in run.label
    return f"{title} (random weights)" if flagged else title


def short_title(run: Run, limit: int = LABEL_CHARS) -> str:
    """`run_title` cut to `limit` characters in the middle (the model's name and the source stay readable)."""
    title = run_title(run)
    if len(title) <= limit:
        return title
    head = limit // 2
    return title[: head - 1] + "…" + title[len(title) - (limit - head) :]


def uses_substitutes(run: Run) -> bool:
    return bool(run.source.get("substitutes"))


def _row_tags(run: Run) -> tuple[str, ...]:
    return ("random",) if run.random_weights else ()


def _short_keys(run: Run) -> set[tuple[str, int]]:
    return {(t, n) for t, n, _, _ in run.progress.short_cells} | {
        key for key, cell in run.cells.items() if cell.n < cell.total and not cell.oom
    }


def score_cell(cell: CellScore | None, partial: bool = False, beyond: bool = False) -> Cell:
    """A task × length cell: the score, or OOM / error / n/a / missing instead of a number that is not there."""
    if cell is None:
        return Cell(BEYOND, tags=("beyond",)) if beyond else Cell(MISSING, tags=("missing",))
    if cell.mean is None:
        return Cell("OOM", tags=("oom",)) if cell.oom else Cell("error", tags=("error",))
    if partial:
        return Cell(fmt_score(cell.mean) + PARTIAL_MARK, cell.mean, ("partial",))
    return Cell(fmt_score(cell.mean), cell.mean)


def _length_cell(
    a: RunAnalysis, length: int, threshold: float, effective: int | None, short: set[tuple[str, int]]
) -> Cell:
    """The mean over tasks at one length, tagged against the threshold; OOM / n/a / missing where it has none."""
    mean: LengthMean | None = a.means.get(length)
    if mean is None or mean.mean is None:
        if any(cell.oom for (t, n), cell in a.run.cells.items() if n == length):
            return Cell("OOM", tags=("oom",))
        return Cell(BEYOND, tags=("beyond",)) if a.run.beyond_context(length) else Cell(MISSING, tags=("missing",))
    partial = not mean.complete or any((t, length) in short for t in a.run.score_tasks)
    tags = ["pass" if mean.mean > threshold else "fail"]
    if length == effective:
        tags.append("effective")
    if partial:
        tags.append("partial")
    return Cell(fmt_score(mean.mean) + (PARTIAL_MARK if partial else ""), mean.mean, tuple(tags))


def _figure_cells(summary: Summary) -> list[Cell]:
    def score(v: float | None) -> Cell:
        return Cell(fmt_score(v), v) if v is not None else Cell(MISSING, tags=("missing",))

    if summary.effective_length is not None:
        eff = Cell(format_size(summary.effective_length), tags=("strong",))
    elif summary.means:
        eff = Cell(f"< {format_size(min(summary.means))}", tags=("fail",))
    else:
        eff = Cell(MISSING, tags=("missing",))
    retention = Cell(f"{100 * summary.retention:.1f}%") if summary.retention is not None else Cell(MISSING)
    slope = Cell(f"{summary.slope:+.2f}") if summary.slope is not None else Cell(MISSING)
    return [score(summary.avg), score(summary.wavg_inc), score(summary.wavg_dec), eff, retention, slope]


SUMMARY_FIGURES = ["Avg", "wAvg (inc)", "wAvg (dec)", "Eff. length", "Retention", "Slope / 2×"]


def summary_table(report: Report) -> Table | None:
    """RULER's table: one row per model, the mean over tasks per length, then the summary figures."""
    if not report.scored and not report.references:
        return None
    lengths = report.lengths
    rows = []
    any_partial = False
    for a in report.scored:
        short = _short_keys(a.run)
        marked = uses_substitutes(a.run)
        cells = [Cell(short_title(a.run) + (f" {SUBSTITUTE_MARK}" if marked else ""))]
        eff = a.summary.effective_length
        cells += [_length_cell(a, n, report.threshold, eff, short) for n in lengths]
        any_partial |= any("partial" in c.tags for c in cells)
        rows.append(Row(cells + _figure_cells(a.summary), _row_tags(a.run) + (("substitutes",) if marked else ())))
    why_not = not_comparable(report)
    unmatched = []
    for ref in report.references:
        means = report.reference_means(ref)
        if not means:
            unmatched.append(ref)
            continue
        summary = summarize(means, report.threshold)
        mark = "published; not comparable ‡" if why_not else "published, not measured"
        cells = [Cell(f"{ref.label} ({mark})", tags=("not-comparable",) if why_not else ())]
        for n in lengths:
            if n not in means:
                cells.append(Cell(MISSING, tags=("missing",)))
                continue
            tags = ["pass" if means[n] > report.threshold else "fail"]
            if n == summary.effective_length:
                tags.append("effective")
            cells.append(Cell(fmt_score(means[n]), means[n], tuple(tags)))
        rows.append(Row(cells + _figure_cells(summary), ("reference",) + (("not-comparable",) if why_not else ())))
    notes = [
        f"Score at a length: mean of the task scores × 100. Effective length: the longest length scoring above "
        f"{report.threshold:g}. wAvg: weights ∝ 1…n over the lengths in order (inc) or n…1 (dec). Retention: "
        f"score at the longest length ÷ score at the shortest. Slope: points per doubling of length (least squares "
        f"on log₂ length).",
    ]
    if any_partial:
        notes.append(f"{PARTIAL_MARK} partial: fewer tasks or samples than the run asked for (see the run notes).")
    for a in report.scored:
        if uses_substitutes(a.run):
            subs = "; ".join(a.run.source["substitutes"])
            notes.append(f"{SUBSTITUTE_MARK} {run_title(a.run)}: its RULER mean includes substitutes ({subs}).")
    for ref in unmatched:
        published = f"{format_size(min(ref.means))}–{format_size(max(ref.means))}"
        notes.append(f"{ref.label}: no published score at these lengths (published: {published}).")
    if any(c.text == BEYOND for row in rows for c in row.cells):
        notes.append(BEYOND_NOTE)
    if len(unmatched) < len(report.references):
        src = report.references[0].source
        notes.append(
            f"Published rows are copied from the {src}, measured with NVIDIA's RULER; figures over this table's "
            f"lengths only."
        )
        if why_not:
            notes.append(
                f"‡ not comparable: {why_not}. Only a run on RULER's own prompts (mmx eval ruler --source ruler:DIR, "
                "all 13 tasks) compares with published rows; see docs/comparing.md."
            )
    return Table("summary", "RULER summary", ["Model", *map(format_size, lengths), *SUMMARY_FIGURES], rows, notes=notes)


def not_comparable(report: Report) -> str | None:
    """Why the published rows do not compare with the measured runs (None when every run used RULER's prompts)."""
    reasons = [
        f"{run_title(a.run)}: {a.run.source.get('not_comparable_because') or 'unknown prompt source'}"
        for a in report.scored
        if not a.run.source.get("comparable")
    ]
    return "; ".join(reasons) if reasons else None


def task_table(report: Report) -> Table | None:
    """Score per task × length, one column block per run, with the mean over tasks as the last row."""
    scored = report.scored
    if not scored:
        return None
    tasks = list(dict.fromkeys(t for a in scored for t in a.run.score_tasks))
    columns, groups = ["Task"], [("", 1)]
    for a in scored:
        columns += [format_size(n) for n in a.means]
        groups.append((short_title(a.run), len(a.means)))
    shorts = [_short_keys(a.run) for a in scored]
    rows = []
    for task in tasks:
        cells = [Cell(task)]
        for a, short in zip(scored, shorts, strict=True):
            cells += [
                score_cell(a.run.cells.get((task, n)), (task, n) in short, a.run.beyond_context(n)) for n in a.means
            ]
        rows.append(Row(cells))
    mean_cells = [Cell("Mean")]
    for a, short in zip(scored, shorts, strict=True):
        eff = a.summary.effective_length
        mean_cells += [_length_cell(a, n, report.threshold, eff, short) for n in a.means]
    rows.append(Row(mean_cells, ("mean",)))
    notes = ["Scores × 100 over the samples that ran; OOM: every sample in the cell ran out of memory."]
    if any(shorts):
        notes.append(f"{PARTIAL_MARK} partial: fewer samples than the run asked for, or some ended in an error.")
    if any(c.text == BEYOND for row in rows for c in row.cells):
        notes.append(BEYOND_NOTE)
    return Table("tasks", "Score per task and length", columns, rows, groups=groups, notes=notes)


def niah_table(a: RunAnalysis) -> Table | None:
    """The needle grid as numbers: depth rows × length columns, and the mean per length."""
    matrix = a.niah
    if matrix is None:
        return None
    rows = []
    for depth in matrix.depths:
        cells = [Cell(f"{depth:g}%")] + [score_cell(matrix.cells.get((depth, n))) for n in matrix.lengths]
        rows.append(Row(cells))
    means = [Cell("Mean")]
    for n in matrix.lengths:
        means.append(score_cell(a.run.cells.get((NIAH_TASK, n))))
    rows.append(Row(means, ("mean",)))
    title = f"Needle in a haystack — {run_title(a.run)}"
    return Table(f"niah-{a.run.key}", title, ["Depth", *map(format_size, matrix.lengths)], rows)


def _num(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else MISSING


def bench_table(a: RunAnalysis) -> Table | None:
    """Every bench measurement of a run, grouped into curves: throughput, time to first token, peak memory, and the
    hardware utilisation where the bench measured it (MFU for prefill, memory bandwidth for decode)."""
    if not a.bench:
        return None
    rows = []
    for series in a.bench:
        for p in series.points:
            ok = p.status == "ok"
            rows.append(
                Row(
                    [
                        Cell(series.bench),
                        Cell(series.name or MISSING),
                        Cell(format_size(p.length)),
                        Cell(_num(p.tokens_per_s if ok else None, ",.0f")),
                        Cell(_num(p.ttft_s if ok else None, ".3f")),
                        Cell(_num(p.peak_mem_gb if ok else None, ".2f")),
                        Cell(_num(p.utilization if ok else None, ".0%")),
                        Cell("ok") if ok else Cell(p.status.upper(), tags=(p.status,)),
                    ]
                )
            )
    columns = ["Bench", "Model / kernel", "Length", "Tokens/s", "TTFT (s)", "Peak mem (GB)", "MFU / BW", "Status"]
    title = f"Throughput and memory — {run_title(a.run)}"
    return Table(f"bench-{a.run.key}", title, columns, rows, text_columns=2)


def _metric_rows(results: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """lm-eval's `{task: {"acc,none": x, "acc_stderr,none": s, "alias": …}}` as "x ± s" per (task, metric)."""
    out = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if name.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            stderr = metrics.get(f"{name}_stderr,{filt}" if filt else f"{name}_stderr")
            label = name if filt in ("", "none") else f"{name} ({filt})"
            text = f"{value:.4f}" + (f" ± {stderr:.4f}" if isinstance(stderr, (int, float)) else "")
            out[(task, label)] = text
    return out


def lm_eval_table(report: Report) -> Table | None:
    """lm-eval results: one row per task and metric, one column per run."""
    runs = [a.run for a in report.analyses if a.run.kind == "lm-eval" and a.run.lm_eval]
    if not runs:
        return None
    per_run = [_metric_rows(run.lm_eval or {}) for run in runs]
    keys = sorted({k for metrics in per_run for k in metrics})
    rows = [
        Row([Cell(task), Cell(metric)] + [Cell(m.get((task, metric), MISSING)) for m in per_run])
        for task, metric in keys
    ]
    return Table("lm-eval", "lm-eval results", ["Task", "Metric", *(run_title(r) for r in runs)], rows, text_columns=2)


def overview_table(report: Report) -> Table:
    """One row per run: what it is, what model, and whether it is complete."""
    rows = []
    for a in report.analyses:
        run = a.run
        p = run.progress
        records = f"{p.recorded}" + (f" / {p.expected}" if p.expected is not None else "")
        status = Cell(p.status, tags=() if p.status == "complete" else ("partial",))
        weights = Cell("random", tags=("fail",)) if run.random_weights else Cell("trained")
        spec = str(run.model.get("spec") or MISSING)
        prompts = Cell(str(run.source.get("source") or MISSING))
        cells = [Cell(run_title(run)), Cell(run.kind), Cell(spec), prompts, weights, status, Cell(records)]
        rows.append(Row(cells, _row_tags(run)))
    notes = [f"{a.run.label}: {note}" for a in report.analyses for note in a.run.progress.notes]
    if any(a.run.random_weights for a in report.analyses):
        notes.append("Runs with random weights test the pipeline, not a model: their scores carry no meaning.")
    columns = ["Run", "Kind", "Model spec", "Prompts", "Weights", "Status", "Records"]
    return Table("runs", "Runs", columns, rows, notes=notes, text_columns=6)


def all_tables(report: Report) -> list[Table]:
    """Every table the report has data for, in reading order."""
    tables = [overview_table(report), summary_table(report), task_table(report)]
    tables += [niah_table(a) for a in report.analyses]
    tables += [bench_table(a) for a in report.analyses]
    tables.append(lm_eval_table(report))
    return [t for t in tables if t is not None]
