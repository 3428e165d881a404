"""Progress of a sweep drawn in the terminal: rich bars on stderr, or plain warnings when nobody watches."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar

from mmx.sizes import format_size
from mmx.workflows.evaluate.progress import Progress, SilentProgress


class BarProgress:
    """Rich bars on stderr: one for the whole sweep, one for the current (task, length) cell, both with an ETA."""

    def __init__(self, console: Console) -> None:
        self.bars = RichBar(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.total_id: Any = None
        self.cell_id: Any = None

    def begin(self, total: int, done: int) -> None:
        """Start drawing; `done` samples were already on disk."""
        self.bars.start()
        self.total_id = self.bars.add_task("sweep", total=total, completed=done)

    def cell(self, task: str, length: int, total: int, done: int) -> None:
        """Replace the cell bar with one for (task, length)."""
        if self.cell_id is not None:
            self.bars.remove_task(self.cell_id)
        self.cell_id = self.bars.add_task(f"{task} @ {format_size(length)}", total=total, completed=done)

    def advance(self, count: int) -> None:
        """One more sample scored."""
        self.bars.advance(self.total_id, count)
        if self.cell_id is not None:  # a data-parallel job draws the whole job only
            self.bars.advance(self.cell_id, count)

    def note(self, message: str) -> None:
        """Print above the bars, so the message stays when they go."""
        self.bars.console.print(f"warning: {message}", markup=False, highlight=False)

    def end(self) -> None:
        """Stop drawing (the bars vanish; the table follows)."""
        self.bars.stop()


def warn(message: str) -> None:
    """A warning line on stderr, flushed at once (the runs it comes from take long)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def sweep_progress(quiet: bool) -> Progress:
    """Bars when a person watches (both streams a terminal, no --quiet); otherwise only the warnings."""
    interactive = not quiet and sys.stdout.isatty() and sys.stderr.isatty()
    return BarProgress(Console(stderr=True)) if interactive else SilentProgress(warn)
