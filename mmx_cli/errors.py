"""The one exception type for failures a user can fix; the CLI prints it as a single line and exits 2."""

from __future__ import annotations


class MmxError(Exception):
    """A user-facing failure: `message` says what is wrong, `hint` how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message
