"""Report charts drawn with matplotlib's object API (no pyplot state, no GUI backend) and embedded as data URIs.

SVG keeps line charts sharp at any zoom and small; text stays text (`svg.fonttype: none`), so the page's own font
draws it. Every length axis is log₂ with ticks at the measured lengths, labelled the way sizes are typed (4k, 1m).
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from mmx.results.report import BenchSeries, Report, RunAnalysis
from mmx.results.tables import not_comparable, run_title
from mmx.sizes import format_size

PALETTE = ["#2563eb", "#ea580c", "#059669", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"]
REFERENCE_COLORS = ["#6b7280", "#9ca3af", "#374151", "#a8a29e", "#57534e"]
# one colour per RULER task, in suite order: the NIAH family in blues and ambers, then greens, violets and reds
TASK_COLORS = [
    "#1d4ed8",
    "#60a5fa",
    "#93c5fd",
    "#b45309",
    "#f59e0b",
    "#fcd34d",
    "#047857",
    "#34d399",
    "#7c3aed",
    "#c084fc",
    "#be123c",
    "#fb7185",
    "#0e7490",
]
RED_GREEN = LinearSegmentedColormap.from_list("mmx_rg", ["#b91c1c", "#f97316", "#facc15", "#84cc16", "#15803d"])
_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "mmx-report",  # stable element ids: the same data gives the same file
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "axes.titleweight": "bold",
    "axes.titlesize": 10,
    "legend.frameon": False,
    "xtick.major.size": 0,  # the grid marks the ticks; tick marks would only add bytes
    "ytick.major.size": 0,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
}


_INDENT = re.compile(rb"\n[ \t]+")


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    alt: str
    uri: str


def to_data_uri(fig: Figure) -> str:
    """Serialise a figure as an SVG data URI (base64, so no character in it needs escaping in HTML)."""
    buf = io.BytesIO()
    with rc_context(_STYLE):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = _INDENT.sub(b"\n", buf.getvalue())  # matplotlib pretty-prints; the indentation is a fifth of the file
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _figure(width: float, height: float) -> Figure:
    with rc_context(_STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def _length_axis(ax: Axes, lengths: Iterable[int], small: bool = False) -> None:
    """A log2 length axis with a tick per length; on small panels with many lengths the labels turn 45 degrees so
    neighbours never overlap."""
    ticks = sorted(set(lengths))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [format_size(n) for n in ticks])
    if small and len(ticks) > 4:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax.minorticks_off()
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)


def _score_axis(ax: Axes) -> None:
    ax.set_ylim(-3, 103)
    ax.set_yticks(range(0, 101, 20))


def run_colors(report: Report) -> dict[str, str]:
    """One colour per run label, kept the same in every chart."""
    return {a.run.label: PALETTE[i % len(PALETTE)] for i, a in enumerate(report.analyses)}


def mean_chart(report: Report) -> Chart | None:
    """The headline: mean over tasks vs length for every scored run, published references dashed, threshold dotted."""
    if not report.scored:
        return None
    colors = run_colors(report)
    with rc_context(_STYLE):
        fig = _figure(8.0, 3.8)
        ax = fig.add_subplot()
        for a in report.scored:
            means = a.summary.means
            ax.plot(
                list(means),
                list(means.values()),
                marker="o",
                lw=2.2,
                ms=5,
                color=colors[a.run.label],
                label=run_title(a.run),
            )
        for i, ref in enumerate(report.references):
            means = report.reference_means(ref)
            if not means:
                continue
            ax.plot(
                list(means),
                list(means.values()),
                ls="--",
                marker=".",
                lw=1.4,
                color=REFERENCE_COLORS[i % len(REFERENCE_COLORS)],
                label=f"{ref.label} (published{'; not comparable' if not_comparable(report) else ''})",
            )
        ax.axhline(report.threshold, color="#6b7280", lw=1, ls=":")
        ax.annotate(
            f"threshold {report.threshold:g}",
            (1.0, report.threshold),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="#6b7280",
        )
        _length_axis(ax, report.lengths)
        _score_axis(ax)
        ax.set_xlabel("context length (tokens, log₂ scale)")
        ax.set_ylabel("mean score over tasks")
        ax.legend(loc="lower left", fontsize=8)
    return Chart(
        "mean", "Mean score vs context length", "mean score over tasks against context length", to_data_uri(fig)
    )


def task_grid_chart(report: Report) -> Chart | None:
    """Small multiples, one panel per task, one line per run: where each model loses which skill."""
    scored = report.scored
    if not scored:
        return None
    tasks = list(dict.fromkeys(t for a in scored for t in a.run.score_tasks))
    colors = run_colors(report)
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    with rc_context(_STYLE):
        fig = _figure(2.6 * cols, 2.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, task in zip(axes, tasks, strict=False):
            for a in scored:
                points = [(n, c.mean) for n in a.means if (c := a.run.cells.get((task, n))) and c.mean is not None]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, marker="o", ms=3, lw=1.6, color=colors[a.run.label], label=run_title(a.run))
            ax.set_title(task, fontsize=9)
            _length_axis(ax, report.lengths, small=True)
            _score_axis(ax)
            ax.tick_params(labelsize=7)
        for ax in axes[len(tasks) :]:
            ax.set_visible(False)
        for ax in axes[: len(tasks)]:  # shared x: the bottom panel of each column carries the labels
            ax.xaxis.set_tick_params(labelbottom=True)
        if len(scored) > 1:
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(scored)), fontsize=8)
    return Chart(
        "tasks", "Score vs length per task", "one panel per task: score against context length", to_data_uri(fig)
    )


def run_chart(a: RunAnalysis) -> Chart:
    """One model's tasks as thin lines with the mean over tasks drawn thick on top."""
    run = a.run
    with rc_context(_STYLE):
        fig = _figure(8.0, 3.6)
        ax = fig.add_subplot()
        for i, task in enumerate(run.score_tasks):
            points = [(n, c.mean) for n in a.means if (c := run.cells.get((task, n))) and c.mean is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, lw=1.1, marker=".", ms=4, alpha=0.85, color=TASK_COLORS[i % len(TASK_COLORS)], label=task
                )
        means = a.summary.means
        ax.plot(list(means), list(means.values()), lw=3, color="#111827", marker="o", ms=5, label="mean", zorder=5)
        _length_axis(ax, a.means)
        _score_axis(ax)
        ax.set_xlabel("context length (tokens, log₂ scale)")
        ax.set_ylabel("score")
        ax.set_title(run_title(run))
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7.5)
    title = f"Score vs length — {run_title(run)}"
    return Chart(f"run-{run.key}", title, f"per-task scores against length for {run.label}", to_data_uri(fig))


def niah_heatmap(a: RunAnalysis) -> Chart | None:
    """Depth (y) × length (x), red → green, each cell's score written in it while the grid is small enough to read."""
    matrix = a.niah
    if matrix is None or not matrix.depths or not matrix.lengths:
        return None
    grid = np.full((len(matrix.depths), len(matrix.lengths)), np.nan)  # [depths, lengths]
    for i, depth in enumerate(matrix.depths):
        for j, length in enumerate(matrix.lengths):
            cell = matrix.cells.get((depth, length))
            if cell is not None and cell.mean is not None:
                grid[i, j] = cell.mean
    with rc_context(_STYLE):
        fig = _figure(min(1.0 + 0.75 * len(matrix.lengths), 11.0), min(1.2 + 0.38 * len(matrix.depths), 9.0))
        ax = fig.add_subplot()
        ax.grid(False)
        ax.set_facecolor("#e5e7eb")  # cells with no score show the background: grey, never a colour of the scale
        image = ax.imshow(
            np.ma.masked_invalid(grid), cmap=RED_GREEN, vmin=0, vmax=100, aspect="auto", interpolation="nearest"
        )
        if grid.size <= 400:
            for (i, j), value in np.ndenumerate(grid):
                cell = matrix.cells.get((matrix.depths[i], matrix.lengths[j]))
                text = "OOM" if cell is not None and cell.oom else ("–" if np.isnan(value) else f"{value:.0f}")
                dark = not np.isnan(value) and (value < 25 or value > 80)  # the scale's deep red and deep green
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "#111827")
        ax.set_xticks(range(len(matrix.lengths)), [format_size(n) for n in matrix.lengths])
        ax.set_yticks(range(len(matrix.depths)), [f"{d:g}%" for d in matrix.depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(run_title(a.run))
        fig.colorbar(image, ax=ax, label="score", shrink=0.9, pad=0.02)
    title = f"Needle in a haystack — {run_title(a.run)}"
    return Chart(f"niah-{a.run.key}", title, f"needle depth × length heatmap for {a.run.label}", to_data_uri(fig))


def _bench_panel(ax: Axes, series: list[tuple[str, str, BenchSeries]], field: str) -> None:
    """One measure against length; a log y axis only when the curves span more than a factor of 30."""
    values = []
    for label, color, s in series:
        points = [(p.length, getattr(p, field)) for p in s.points if p.status == "ok" and getattr(p, field) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            values += ys
            ax.plot(xs, ys, marker="o", ms=4, lw=1.8, color=color, label=label)
        failed = [p.length for p in s.points if p.status != "ok"]
        if failed:  # drawn along the top edge: a failure has no value, only a place on the length axis
            ax.scatter(
                failed,
                [0.97] * len(failed),
                marker="x",
                s=40,
                linewidths=2,
                color=color,
                transform=ax.get_xaxis_transform(),
                zorder=6,
                clip_on=False,
            )
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0, top=1.12 * max(values, default=1.0))


def bench_chart(report: Report, bench: str) -> Chart | None:
    """Throughput and peak memory against length for one bench kind, every run's curves together; × marks OOM."""
    series = []
    for a in report.analyses:
        for s in a.bench:
            if s.bench == bench:
                label = a.run.label if s.name in ("", a.run.model_name) else f"{a.run.label} · {s.name}"
                series.append((label, PALETTE[len(series) % len(PALETTE)], s))
    if not series:
        return None
    lengths = [p.length for _, _, s in series for p in s.points]
    panels = [("tokens_per_s", "tokens / s", "throughput")]
    if any(p.peak_mem_gb is not None for _, _, s in series for p in s.points):  # CPU runs measure no peak memory
        panels.append(("peak_mem_gb", "peak memory (GB)", "peak memory"))
    with rc_context(_STYLE):
        fig = _figure(4.5 * len(panels), 3.4)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (measure, ylabel, title) in zip(axes, panels, strict=True):
            _bench_panel(ax, series, measure)
            _length_axis(ax, lengths)
            ax.set_xlabel("context length (tokens, log₂ scale)")
            ax.set_ylabel(ylabel + (" (log scale)" if ax.get_yscale() == "log" else ""))
            ax.set_title(f"{bench}: {title}")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8)
    title = f"{bench.capitalize()} throughput and memory vs length"
    return Chart(f"bench-{bench}", title, f"{bench} tokens per second and peak memory against length", to_data_uri(fig))


def all_charts(report: Report) -> dict[str, list[Chart]]:
    """Charts grouped by report section, each list in reading order; empty sections are left out."""
    sections: dict[str, list[Chart | None]] = {
        "summary": [mean_chart(report)],
        "tasks": [task_grid_chart(report)] + [run_chart(a) for a in report.scored],
        "niah": [niah_heatmap(a) for a in report.analyses if a.run.has_niah],
        "bench": [bench_chart(report, kind) for kind in _bench_kinds(report)],
    }
    return {name: [c for c in charts if c] for name, charts in sections.items() if any(charts)}


def _bench_kinds(report: Report) -> list[str]:
    return list(dict.fromkeys(s.bench for a in report.analyses for s in a.bench))
