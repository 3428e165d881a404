"""What a sweep reports while it works; the CLI draws it, tests and benchmarks may ignore it (a light module, so the
CLI can name it without importing torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    """What the runner reports while it works; the CLI draws it, tests and benchmarks may ignore it."""

    def begin(self, total: int, done: int) -> None: ...

    def cell(self, task: str, length: int, total: int, done: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def note(self, message: str) -> None: ...

    def end(self) -> None: ...


class SilentProgress:
    """Progress that draws nothing; notes go to `note_sink` (stderr in the CLI) so skips and OOMs are never hidden."""

    def __init__(self, note_sink: Callable[[str], None] | None = None) -> None:
        self.note_sink = note_sink

    def begin(self, total: int, done: int) -> None:
        """Nothing to draw."""

    def cell(self, task: str, length: int, total: int, done: int) -> None:
        """Nothing to draw."""

    def advance(self, count: int) -> None:
        """Nothing to draw."""

    def note(self, message: str) -> None:
        """Pass the message on, if anyone listens."""
        if self.note_sink is not None:
            self.note_sink(message)

    def end(self) -> None:
        """Nothing to draw."""
