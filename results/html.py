"""The self-contained HTML report: one file, charts as data URIs, tables as plain HTML, the numbers as embedded JSON.

Nothing in it runs script or fetches anything, so it opens the same from an e-mail attachment, offline, or years later.
"""

from __future__ import annotations

import importlib.metadata
import shlex
from pathlib import Path
from typing import Any

import jinja2

from mmx.errors import MmxError
from mmx.files import atomic_write
from mmx.results.charts import all_charts, run_colors
from mmx.results.report import Report
from mmx.results.runs import Run
from mmx.results.tables import Cell, Row, all_tables, run_title
from mmx.sizes import format_size

TEMPLATES = Path(__file__).parent / "templates"


def heat(value: float | None) -> str:
    """A soft red → amber → green background for a 0–100 score, light enough to keep dark text readable."""
    if value is None:
        return ""
    hue = 1.2 * max(0.0, min(100.0, value))  # 0 = red, 120 = green
    return f"background-color: hsl({hue:.0f} 70% 86%)"


def cell_class(cell: Cell, row: Row) -> str:
    """CSS classes from the cell's and row's tags."""
    return " ".join([f"c-{t}" for t in cell.tags] + [f"r-{t}" for t in row.tags])


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested metadata as (dotted key, text) pairs for a definition list; lists of scalars joined by commas."""
    if isinstance(value, dict):
        out = []
        for key in value:
            out += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [pair for i, v in enumerate(value) for pair in flatten(v, f"{prefix}[{i}]")]
    if isinstance(value, list):
        return [(prefix, ", ".join(str(v) for v in value) or "—")]
    return [(prefix, "—" if value is None else str(value))]


def run_card(run: Run, color: str) -> dict[str, Any]:
    """What the metadata card of one run shows."""
    command = run.meta.get("command")
    commands = command.values() if isinstance(command, dict) else [command]  # a joined run: one per part
    overview = {
        "directory": run.directories,
        "kind": run.kind,
        "suite": run.meta.get("suite"),
        "command": "; ".join(shlex.join(str(a) for a in c) if isinstance(c, list) else str(c) for c in commands),
        "started": run.meta.get("started_at"),
        "git commit": run.meta.get("git_commit"),
        "seed": run.params.get("seed"),
        "weights": "random (untrained): scores are meaningless" if run.random_weights else "trained",
    }
    model = {k: v for k, v in run.model.items() if k != "config"}
    params = {k: v for k, v in run.params.items() if k not in ("model", "task_params")}
    return {
        "label": run_title(run),
        "color": color,
        "random": run.random_weights,
        "status": run.progress.status,
        "notes": run.progress.notes,
        "sections": [  # (title, items, folded): long, rarely read sections start folded
            ("Run", [(k, str(v)) for k, v in overview.items() if v is not None], False),
            ("Model", flatten(model), False),
            ("Parameters", flatten(params), False),
            ("Hardware", flatten(run.meta.get("hardware") or {}), False),
            ("Versions", flatten(run.meta.get("versions") or {}), False),
            ("Model config", flatten(run.model.get("config") or {}), True),
            ("Task parameters", flatten(run.params.get("task_params") or {}), True),
        ],
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["heat"] = heat
    env.globals["cell_class"] = cell_class
    return env


def render_html(report: Report) -> str:
    """The whole report as one HTML string."""
    tables = {t.key: t for t in all_tables(report)}
    colors = run_colors(report)
    try:
        version = importlib.metadata.version("mmx")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            report=report,
            tables=tables,
            niah_tables=[t for k, t in tables.items() if k.startswith("niah-")],
            bench_tables=[t for k, t in tables.items() if k.startswith("bench-")],
            charts=all_charts(report),
            cards=[run_card(a.run, colors[a.run.label]) for a in report.analyses],
            warnings=_warnings(report),
            data=report.to_dict(),
            version=version,
            length_range=" – ".join(dict.fromkeys(format_size(n) for n in (report.lengths[:1] + report.lengths[-1:]))),
        )
    )


def _warnings(report: Report) -> list[str]:
    out = []
    random = [a.run.label for a in report.analyses if a.run.random_weights]
    if random:
        out.append(f"Random weights: {', '.join(random)} — these runs test the pipeline; their scores mean nothing.")
    partial = [a.run.label for a in report.analyses if a.run.progress.status != "complete"]
    if partial:
        out.append(f"Incomplete or partly failed: {', '.join(partial)} — see the notes under Runs.")
    return out


def write_html(report: Report, path: str | Path) -> Path:
    """Render and write the report atomically (a failed write leaves the previous report whole); an unwritable path
    is a user error."""
    target = Path(path)
    page = render_html(report)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MmxError(f"cannot write {target}: {err.strerror}", "choose another --html path") from None
    return atomic_write(target, page.encode("utf-8"), "choose another --html path")
