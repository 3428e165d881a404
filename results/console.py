"""Report tables as rich terminal tables: colour says how good a score is, tags say what a cell is."""

from __future__ import annotations

import sys

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from mmx.results.tables import Cell, Row, Table

_PIPE_WIDTH = 200  # a file or pipe has no width: keep whole tables rather than rich's 80-column default
_TAG_STYLE = {
    "oom": "bold magenta",
    "error": "bold red",
    "missing": "dim",
    "beyond": "dim",
    "strong": "bold",
    "pass": "green",
    "fail": "red",
}


def score_style(value: float) -> str:
    """A traffic-light colour for a 0–100 score."""
    if value >= 90:
        return "green"
    if value >= 70:
        return "yellow"
    if value >= 50:
        return "dark_orange"
    return "red"


def _cell_text(cell: Cell, row: Row) -> Text:
    style = next((_TAG_STYLE[t] for t in cell.tags if t in _TAG_STYLE), "")
    if not style and cell.value is not None:
        style = score_style(cell.value)
    if "effective" in cell.tags:
        style += " bold underline"
    if "partial" in cell.tags:
        style += " italic"
    if "reference" in row.tags:
        style += " italic"
    return Text(cell.text, style=style.strip())


def _headers(table: Table) -> list[str]:
    """Column headers with each block's heading above its first column (rich has no spanning headers)."""
    if not any(label for label, _ in table.groups):
        return list(table.columns)
    headers, col = [], 0
    for label, span in table.groups:
        for i in range(span):
            heading = label if i == 0 else ""
            headers.append(f"{heading}\n{table.columns[col]}" if label else table.columns[col])
            col += 1
    return headers


def to_rich(table: Table) -> RichTable:
    """One rich table; numbers right-aligned and never wrapped, the row labels kept readable when space is short."""
    out = RichTable(title=table.title, box=box.SIMPLE_HEAVY, title_style="bold", header_style="bold cyan")
    label_width = min(28, max(len(row.cells[0].text) for row in table.rows)) if table.rows else None
    for i, header in enumerate(_headers(table)):
        if i == 0:
            out.add_column(header, justify="left", min_width=label_width)
        elif i < table.text_columns:
            out.add_column(header, justify="left")
        else:
            out.add_column(header, justify="right", no_wrap=True)
    for row in table.rows:
        label_style = "yellow" if "random" in row.tags else ("italic dim" if "reference" in row.tags else "")
        cells = [_cell_text(cell, row) for cell in row.cells]
        if label_style:
            cells[0].stylize(label_style)
        out.add_row(*cells, end_section="mean" in row.tags)
    return out


def split_blocks(table: Table) -> list[Table]:
    """A table of several column blocks as one table per block, each keeping the row-label column."""
    if len(table.groups) < 3:  # the label column plus a single block: nothing to split
        return [table]
    parts, start = [], table.groups[0][1]
    lead = table.columns[:start]
    for label, span in table.groups[1:]:
        rows = [Row(row.cells[:start] + row.cells[start : start + span], row.tags) for row in table.rows]
        columns = lead + table.columns[start : start + span]
        parts.append(Table(table.key, f"{table.title} — {label}", columns, rows, notes=table.notes, text_columns=1))
        start += span
    return parts


def print_tables(tables: list[Table], console: Console | None = None) -> None:
    """Print each table with its notes under it; column blocks too wide for the console go one under another."""
    console = console or Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
    for table in tables:
        rendered = to_rich(table)
        if console.measure(rendered).maximum > console.width and len(table.groups) > 2:
            for part in split_blocks(table):
                console.print(to_rich(part))
        else:
            console.print(rendered)
        for note in table.notes:
            console.print(Text(note, style="dim"))
        console.print()
