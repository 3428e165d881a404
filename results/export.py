"""The report's numbers as long-format CSV files (one observation per row), for spreadsheets and re-plotting."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.files import atomic_write
from mmx.results.aggregate import Summary, summarize
from mmx.results.report import Report


def _rows(report: Report) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """File name → (header, rows) for every table the report has data for."""
    scores, means, summary, niah, bench, lm_eval = [], [], [], [], [], []
    for a in report.analyses:
        run = a.run
        for cell in run.cells.values():
            c = cell.counts
            scores.append([run.label, cell.task, cell.length, cell.n, cell.mean, c.get("oom", 0), c.get("error", 0)])
        for length, m in a.means.items():
            means.append([run.label, "measured", length, m.mean, m.scored, m.expected])
        if a.summary is not None:
            summary.append([run.label, "measured", run.random_weights, *_figures(a.summary)])
        if a.niah is not None:
            for (depth, length), cell in a.niah.cells.items():
                niah.append([run.label, depth, length, cell.n, cell.mean])
        for s in a.bench:
            for p in s.points:
                bench.append([run.label, s.bench, s.name, p.length, p.tokens_per_s, p.ttft_s, p.peak_mem_gb, p.status])
        for task, metrics in (run.lm_eval or {}).items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    lm_eval.append([run.label, task, metric, value])
    for ref in report.references:
        ref_means = report.reference_means(ref)
        means += [[ref.label, "published", n, v, None, None] for n, v in ref_means.items()]
        summary.append([ref.label, "published", False, *_figures(summarize(ref_means, report.threshold))])
    figures = ["avg", "wavg_inc", "wavg_dec", "effective_length", "retention", "slope_per_doubling", "threshold"]
    return {
        "scores.csv": (["run", "task", "length", "n", "score", "oom", "error"], scores),
        "length_means.csv": (["run", "source", "length", "score", "tasks_scored", "tasks_expected"], means),
        "summary.csv": (["run", "source", "random_weights", *figures], summary),
        "niah.csv": (["run", "depth", "length", "n", "score"], niah),
        "bench.csv": (["run", "bench", "series", "length", "tokens_per_s", "ttft_s", "peak_mem_gb", "status"], bench),
        "lm_eval.csv": (["run", "task", "metric", "value"], lm_eval),
    }


def _figures(s: Summary) -> list[Any]:
    return [s.avg, s.wavg_inc, s.wavg_dec, s.effective_length, s.retention, s.slope, s.threshold]


def csv_headers(report: Report) -> dict[str, list[str]]:
    """File name → header row of every CSV file `write_csv` may write."""
    return {name: header for name, (header, _) in _rows(report).items()}


def write_csv(report: Report, directory: str | Path) -> list[Path]:
    """Write one CSV per non-empty table into `directory`, each atomically; returns the paths written."""
    folder = Path(directory)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MmxError(f"cannot create {folder}: {err.strerror}", "choose another --csv directory") from None
    for name, (header, rows) in _rows(report).items():
        if not rows:
            continue
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        written.append(atomic_write(folder / name, buf.getvalue(), "choose another --csv directory"))
    return written
