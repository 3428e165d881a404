"""The run store: `run.json` written once, `samples.jsonl` / `bench.jsonl` appended line by line and flushed.

A run directory is resumable: records already on disk are skipped by the runner, a torn last line (a process killed
mid-write) is dropped, and reopening a directory with different parameters is refused rather than mixing results.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mmx.errors import MmxError

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
BENCH_FILE = "bench.jsonl"
SUMMARY_FILE = "summary.csv"


SUMMARY_COLUMNS = ("task", "length", "n", "score")
Reporter = Callable[[str], None]
# describe() keys that say where and how a model ran rather than what it computes (the prefill chunk and the tensor-
# parallel degree change only rounding): a run may resume elsewhere.
UNPINNED_MODEL_KEYS = frozenset({"device", "prefill_chunk", "tensor_parallel"})


def pinned_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model fields a resumed run must match. Weights known by their digest may sit at another path (a
    moved checkout, a copy on a GPU machine); weights known only by their path must stay there."""
    unpinned = UNPINNED_MODEL_KEYS | ({"checkpoint"} if "weights_sha256" in model else set())
    return {key: value for key, value in model.items() if key not in unpinned}


def comparable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Run parameters with the model cut to its pinned fields, so a run written before a field was unpinned (its
    run.json still holds it) matches a new one."""
    model = params.get("model")
    return {**params, "model": pinned_model(model)} if isinstance(model, Mapping) else dict(params)


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def read_jsonl(path: Path, on_corrupt: Reporter | None = None) -> Iterator[dict[str, Any]]:
    """Yield each well-formed record; a corrupt line is reported (by `on_corrupt`, else a warning) and skipped."""
    report = on_corrupt or _warn
    if not path.exists():
        return
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                report(f"{path}:{lineno}: skipping a corrupt line")
                continue
            if isinstance(record, dict):
                yield record
            else:
                report(f"{path}:{lineno}: skipping a line that is not a JSON object")


class RunStore:
    """One run directory. `params` identify the run: a rerun with equal params resumes, other params are refused."""

    def __init__(self, directory: str | os.PathLike[str], on_corrupt: Reporter | None = None) -> None:
        self.dir = Path(directory)
        self.on_corrupt = on_corrupt

    @property
    def meta(self) -> dict[str, Any]:
        """The contents of `run.json`."""
        path = self.dir / RUN_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise MmxError(f"{self.dir} is not a run directory (no {RUN_FILE})", "pass a directory mmx wrote") from None
        except json.JSONDecodeError as err:
            raise MmxError(f"{path} is not valid JSON ({err.msg})", "restore or delete the file") from None

    def ensure_writable(self) -> None:
        """Create the directory and prove a file can be written there, before any expensive work starts."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise MmxError(f"cannot write to {self.dir}: {err.strerror}", "choose another --out directory") from None

    def open(self, meta: dict[str, Any]) -> bool:
        """Create the run, or check that an existing one has the same `meta["params"]`. True when resuming."""
        self.ensure_writable()
        path = self.dir / RUN_FILE
        if path.exists():
            old_params = comparable_params(self.meta.get("params") or {})
            new_params = comparable_params(meta.get("params") or {})
            if old_params != new_params:
                diff = sorted(key for key in {*old_params, *new_params} if old_params.get(key) != new_params.get(key))
                raise MmxError(
                    f"{self.dir} holds a run with different parameters ({', '.join(diff)})",
                    "rerun with the original parameters to resume, or pass a new --out directory",
                )
            return True
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        tmp.replace(path)
        return False

    def _append(self, name: str, record: dict[str, Any]) -> None:
        path = self.dir / name
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        if _ends_mid_line(path):  # a torn last line from a killed process must not swallow this record
            data = b"\n" + data
        with path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def append_sample(self, record: dict[str, Any]) -> None:
        """Append one scored sample, durably, before the next one starts."""
        self._append(SAMPLES_FILE, record)

    def append_bench(self, record: dict[str, Any]) -> None:
        """Append one benchmark measurement."""
        self._append(BENCH_FILE, record)

    def samples(self) -> list[dict[str, Any]]:
        """Every scored sample on disk; a sample recorded twice (never written by mmx) keeps its first copy."""
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for record in read_jsonl(self.dir / SAMPLES_FILE, self.on_corrupt):
            seen.setdefault(sample_key(record), record)
        return list(seen.values())

    def bench(self) -> list[dict[str, Any]]:
        """Every benchmark record on disk."""
        return list(read_jsonl(self.dir / BENCH_FILE, self.on_corrupt))

    def done_keys(self) -> set[tuple[Any, ...]]:
        """Keys of the samples already on disk, which a resumed run skips."""
        return {sample_key(r) for r in read_jsonl(self.dir / SAMPLES_FILE, self.on_corrupt)}

    def write_summary(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace `summary.csv` atomically (task,length,n,score; score 0..100, empty when nothing scored)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": "" if row.get("score") is None else f"{row['score']:.2f}"})
        path = self.dir / SUMMARY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(path)


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def sample_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a sample within a run: task, target length and index."""
    return (record.get("task"), record.get("length"), record.get("index"))
