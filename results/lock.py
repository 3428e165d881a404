"""One writer per run directory: an advisory lock on `DIR/.mmx-lock`, released by the operating system when its holder
exits however it exits (a SIGKILLed run leaves no stale lock), so a second `mmx eval` or `mmx train` on a directory
in use is refused with the holder's process id, host and command instead of writing every sample twice.

The lock belongs to the process that writes: under `torch.distributed` only the rank that writes the run takes it,
on behalf of the others (`with RunLock(out): ...` around the writing).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from mmx.errors import MmxError

LOCK_FILE = ".mmx-lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is a no-op there
    fcntl = None  # type: ignore[assignment]


def _holder(command: list[str] | None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(command if command is not None else ["mmx", *sys.argv[1:]]),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _describe(path: Path) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        holder = json.loads(path.read_text())
        return f"process {holder['pid']} on {holder['host']} (`{holder['command']}`, since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunLock:
    """Exclusive use of a run directory while the `with` block runs; creates the directory when it is missing, and
    removes it again on the way out if nothing but the lock was ever written there (a run refused before its first
    file leaves no empty directory behind)."""

    def __init__(self, directory: str | os.PathLike[str], command: list[str] | None = None) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LOCK_FILE
        self.command = command
        self._fh: IO[str] | None = None
        self._created = False

    def acquire(self) -> RunLock:
        """Take the lock or raise MmxError naming its holder."""
        try:
            self._created = not self.dir.exists()
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = self.path.open("a+")
        except OSError as err:
            raise MmxError(f"cannot write to {self.dir}: {err.strerror}", "choose another --out directory") from None
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise MmxError(
                    f"{self.dir} is in use by {_describe(self.path)}",
                    "wait for that run to finish (or stop it), or pass another --out directory",
                ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(_holder(self.command)) + "\n")
            fh.flush()
        except OSError:
            pass  # the lock itself is held; the note about who holds it is a courtesy
        self._fh = fh
        return self

    def release(self) -> None:
        """Let go of the lock (closing the file releases it); drop a directory this lock created and nothing used."""
        if self._fh is None:
            return
        try:  # tidy up while still holding the lock, so no one can have taken it on the file being removed
            if self._created and [p.name for p in self.dir.iterdir()] == [LOCK_FILE]:
                self.path.unlink()
                self.dir.rmdir()
        except OSError:
            pass
        finally:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
