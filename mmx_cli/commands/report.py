"""`mmx report RUN_DIR...`: decay tables in the terminal, or as Markdown, CSV files and a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmx.commands.app import app
from mmx.errors import MmxError
from mmx.results.console import print_tables
from mmx.results.export import csv_headers, write_csv
from mmx.results.markdown import report_markdown
from mmx.results.published import REFERENCES
from mmx.results.report import DEFAULT_THRESHOLD, Report
from mmx.results.rundir import check_csv_target, check_html_target
from mmx.results.tables import all_tables


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories written by mmx eval / mmx bench (one or more).")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report to this file.")
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown tables instead of rich tables.")] = False,
    csv_dir: Annotated[
        Path | None, typer.Option("--csv", help="Write the numbers as CSV files into this folder.")
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Effective length: the longest length whose mean exceeds this.")
    ] = DEFAULT_THRESHOLD,
    reference: Annotated[
        list[str] | None,
        typer.Option("--reference", help=f"Add published RULER scores as a row (repeatable): {', '.join(REFERENCES)}."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the paths of the files written.")] = False,
    separate: Annotated[
        bool,
        typer.Option(
            "--separate",
            help="Keep every run directory apart; by default runs of one model and task set at different lengths "
            "join into one curve.",
        ),
    ] = False,
) -> None:
    """Score per task × length, RULER summary with effective length, needle heatmap, throughput; one or many runs."""
    from mmx.results.html import write_html  # matplotlib and jinja2 load only when a report is made

    if not 0 <= threshold <= 100:
        raise MmxError(
            f"--threshold {threshold:g} is outside 0–100",
            f"scores are on a 0–100 scale; RULER uses {DEFAULT_THRESHOLD}",
        )
    built = Report.build(runs, references=reference or [], threshold=threshold, join=not separate)
    if html is not None:  # outputs never replace inputs or a user's files: refuse before printing anything
        check_html_target(html)
    if csv_dir is not None:
        check_csv_target(csv_dir, csv_headers(built))
    tables = all_tables(built)
    if markdown:
        print(report_markdown(tables), end="")
    elif not quiet:
        print_tables(tables)
    written = []
    if csv_dir is not None:
        written += write_csv(built, csv_dir)
    if html is not None:
        written.append(write_html(built, html))
    for path in written:
        typer.echo(f"wrote {path}", err=markdown)
