"""Report tables as rich terminal tables: colour says how good a score is, tags say what a cell is."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from mmx.results.tables import Cell, Row, Table

_LABEL_WIDTH = 28  # on a narrow console, row labels longer than this wrap rather than push numbers off screen
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
    return [f"{label if first else ''}\n{name}" if label else name for label, first, name in table.headed_columns()]


def to_rich(table: Table, label_cap: int | None = None) -> RichTable:
    """One rich table; numbers right-aligned and never wrapped; row labels wrap beyond `label_cap` characters."""
    # titles and headers hold run labels such as "mmx-mini [run-a]", which rich would read as markup
    out = RichTable(title=escape(table.title), box=box.SIMPLE_HEAVY, title_style="bold", header_style="bold cyan")
    label_width = max((len(row.cells[0].text) for row in table.rows), default=0)
    if label_cap is not None:
        label_width = min(label_width, label_cap)
    for i, header in enumerate(map(escape, _headers(table))):
        if i == 0:
            out.add_column(header, justify="left", min_width=label_width, max_width=label_cap)
        elif i < table.text_columns:
            out.add_column(header, justify="left")
        else:
            out.add_column(header, justify="right", no_wrap=True)
    for row, following in zip(table.rows, [*table.rows[1:], None], strict=True):
        label_style = "yellow" if "random" in row.tags else ("italic dim" if "reference" in row.tags else "")
        cells = [_cell_text(cell, row) for cell in row.cells]
        if label_style:
            cells[0].stylize(label_style)
        out.add_row(*cells, end_section=following is not None and "mean" in following.tags)  # a rule above the mean
    return out


def split_blocks(table: Table) -> list[Table]:
    """A table of several column blocks as one table per block, each keeping the row-label column."""
    lead = table.groups[0][1] if table.groups else 1
    if len(table.groups) < 3:  # the label column plus a single block: nothing to split
        return [table]
    parts, start = [], lead
    for label, span in table.groups[1:]:
        rows = [Row(row.cells[:lead] + row.cells[start : start + span], row.tags) for row in table.rows]
        columns = table.columns[:lead] + table.columns[start : start + span]
        parts.append(Table(table.key, f"{table.title} — {label}", columns, rows, text_columns=table.text_columns))
        start += span
    return parts


def _columns(table: Table, keep: list[int], title: str) -> Table:
    """The row-label column plus the columns `keep` (indices into `table.columns`)."""
    return Table(
        table.key,
        title,
        [table.columns[0]] + [table.columns[i] for i in keep],
        [Row([row.cells[0]] + [row.cells[i] for i in keep], row.tags) for row in table.rows],
        text_columns=1 + sum(i < table.text_columns for i in keep),
    )


def split_columns(table: Table, fits: Callable[[Table], bool]) -> list[Table]:
    """A table without column blocks, cut into runs of columns that each `fits` beside the row labels."""
    chunks: list[list[int]] = [[]]
    for i in range(1, len(table.columns)):
        if chunks[-1] and not fits(_columns(table, [*chunks[-1], i], table.title)):
            chunks.append([])
        chunks[-1].append(i)
    if len(chunks) == 1:
        return [table]
    return [_columns(table, chunk, f"{table.title} ({k}/{len(chunks)})") for k, chunk in enumerate(chunks, start=1)]


def fit(table: Table, console: Console) -> list[Table]:
    """The table as one or more tables that fit the console: per column block first, then by runs of columns."""

    def fits(t: Table) -> bool:
        wide = console.options.update_width(10**6)
        return console.measure(to_rich(t, _LABEL_WIDTH), options=wide).maximum <= console.width

    return [piece for part in split_blocks(table) for piece in ([part] if fits(part) else split_columns(part, fits))]


def _natural_width(table: Table, console: Console) -> int:
    return console.measure(to_rich(table), options=console.options.update_width(10**6)).maximum


def print_tables(tables: list[Table], console: Console | None = None) -> None:
    """Print each table with its notes under it; one too wide for the console is cut into pieces that fit (with
    long row labels wrapped) rather than squeezed until its numbers turn into "…"."""
    console = console or Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
    for table in tables:
        if _natural_width(table, console) <= console.width:
            console.print(to_rich(table))
        else:
            for part in fit(table, console):
                console.print(to_rich(part, _LABEL_WIDTH))
        for note in table.notes:
            console.print(Text(note, style="dim"))
        console.print()
