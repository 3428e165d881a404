"""What the phases share: running `mmx` as a user does (a subprocess, or the CLI entry in this process), and spotting
a traceback in what it printed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Ran:
    """How one `mmx` command ended: exit code, what it printed, and whether a traceback reached the user."""

    code: int
    out: str
    err: str
    traceback: bool

    @property
    def one_line_error(self) -> bool:
        """Exit 2, and the error is one `error: …` line, the last on stderr (progress and warnings may come first)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        return self.code == 2 and len(errors) == 1 and lines[-1] == errors[0] and not self.traceback


def env(workdir: Path) -> dict[str, str]:
    """A user's environment, offline, with caches inside `workdir`."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(workdir / "datasets-cache"),
    }


def mmx_argv(*args: object) -> list[str]:
    """`python -m mmx ARGS…` with this interpreter."""
    return [sys.executable, "-m", "mmx", *(str(a) for a in args)]


def run(args: list[object], workdir: Path, timeout: float = 900) -> Ran:
    """`mmx ARGS…` as a subprocess, to completion."""
    done = subprocess.run(
        mmx_argv(*args), capture_output=True, text=True, env=env(workdir), cwd=workdir, timeout=timeout
    )
    return Ran(done.returncode, done.stdout, done.stderr, TRACEBACK in done.stderr)


def run_here(args: list[object], cwd: Path | None = None) -> Ran:
    """`mmx ARGS…` through the console-script entry in this process (fast: torch is imported once). Any exception
    other than SystemExit is what a user would have seen as a traceback."""
    from mmx.commands.app import main

    out, err = io.StringIO(), io.StringIO()
    before = Path.cwd()
    traceback = False
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exit_info:
                code = int(exit_info.code or 0)
            except Exception as exc:  # a traceback for a user is what this benchmark counts
                print(f"{TRACEBACK}\n{type(exc).__name__}: {exc}", file=sys.stderr)
                code, traceback = 1, True
    finally:
        os.chdir(before)
    return Ran(code, out.getvalue(), err.getvalue(), traceback)
