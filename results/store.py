"""The run store: `run.json` written once, `samples.jsonl` / `bench.jsonl` appended line by line and flushed.

A run directory is resumable: records already on disk are skipped by the runner, a torn last line (a process killed
mid-write) or a line of the wrong shape is reported and its sample runs again, and reopening a directory with
different parameters is refused rather than mixing results.

A run has an identity, `run_id` (a digest of its kind and parameters), kept in `run.json` and stamped on every record
it appends; a directory whose records carry another identity than its `run.json` (a `run.json` deleted and written
again by another run, or replaced by hand) is refused, so no sample is ever labelled with a model that did not make
it. Runs written before identities existed (no `run_id` anywhere) load and resume as before.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.files import atomic_write, line_problem, read_json, validated, write_hint
from mmx.results.schema import BenchRecord, DocumentRecord, RunMeta, SampleRecord

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
BENCH_FILE = "bench.jsonl"
SUMMARY_FILE = "summary.csv"
SWEEPS_FILE = "sweeps.jsonl"  # one line per sweep over a run directory: its time and prefill accounting


IDENTITY = "run_id"
SUMMARY_COLUMNS = ("task", "length", "n", "score")
_META_HINT = "restore the file from a copy, or start the run again in a new --out directory"
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


def read_jsonl(
    path: Path, on_corrupt: Reporter | None = None, schema: type[Any] | None = None, what: str = "record"
) -> Iterator[dict[str, Any]]:
    """Yield each well-formed record (one that fits `schema`, when given); a corrupt line or one of the wrong shape
    is reported (by `on_corrupt`, else a warning) and skipped. A path that cannot be read at all is an MmxError."""
    report = on_corrupt or _warn
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as err:
        raise MmxError(f"cannot read {path}: {err.strerror}", "it must be a file mmx wrote") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                report(f"{path}:{lineno}: skipping a corrupt line")
                continue
            if not isinstance(record, dict):
                report(f"{path}:{lineno}: skipping a line that is not a JSON object")
                continue
            problem = line_problem(schema, record) if schema is not None else None
            if problem is not None:
                report(f"{path}:{lineno}: skipping a line that is not a {what} ({problem})")
                continue
            yield record


def run_identity(kind: str, params: Mapping[str, Any]) -> str:
    """A run's identity: a digest of its kind and comparable parameters, so equal runs share it and others never do."""
    text = json.dumps({"kind": kind, "params": comparable_params(params)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunStore:
    """One run directory. `params` identify the run: a rerun with equal params resumes, other params are refused."""

    def __init__(self, directory: str | os.PathLike[str], on_corrupt: Reporter | None = None) -> None:
        self.dir = Path(directory)
        self.on_corrupt = on_corrupt
        self.run_id: str | None = None  # set by `open`: the identity stamped on every appended record

    @property
    def meta(self) -> dict[str, Any]:
        """The contents of `run.json`, checked: an object whose `kind`, `model`, `params` and `run_id` have the
        right types."""
        path = self.dir / RUN_FILE
        if not self.dir.is_dir():
            raise MmxError(f"{self.dir} is not a run directory", "pass a directory written by mmx eval / mmx bench")
        if not path.exists():
            raise MmxError(f"{self.dir} is not a run directory (no {RUN_FILE})", "pass a directory mmx wrote")
        raw = read_json(path, _META_HINT)
        validated(RunMeta, raw, str(path), _META_HINT)
        return raw

    def ensure_writable(self) -> None:
        """Create the directory and prove a file can be written there, before any expensive work starts."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise MmxError(
                f"cannot write to {self.dir}: {err.strerror}", write_hint(err, "choose another --out directory")
            ) from None

    def open(self, meta: dict[str, Any]) -> bool:
        """Create the run, or check that an existing one has the same `meta["params"]` and that every record on disk
        is its own. True when resuming."""
        self.ensure_writable()
        path = self.dir / RUN_FILE
        if path.exists():
            old = self.meta
            old_params = comparable_params(old.get("params") or {})
            new_params = comparable_params(meta.get("params") or {})
            if old_params != new_params:
                diff = sorted(key for key in {*old_params, *new_params} if old_params.get(key) != new_params.get(key))
                raise MmxError(
                    f"{self.dir} holds a run with different parameters ({', '.join(diff)})",
                    "rerun with the original parameters to resume, or pass a new --out directory",
                )
            self.run_id = old.get(IDENTITY)  # None: a run from before identities, whose records carry none
            self.check_identity()
            return True
        identity = run_identity(str(meta.get("kind") or "eval"), meta.get("params") or {})
        found = self._identities()
        if found and found != {identity}:
            raise MmxError(
                f"{self.dir} holds samples of another run but no {RUN_FILE}, so they cannot be resumed as this run",
                f"restore that run's {RUN_FILE} to resume it, or pass a new --out directory",
            )
        atomic_write(path, json.dumps({**meta, IDENTITY: identity}, indent=2, sort_keys=True, default=str) + "\n")
        self.run_id = identity
        return bool(found)

    def _identities(self) -> set[str | None]:
        """The identities the records on disk carry (None for records written before identities)."""
        found: set[str | None] = set()
        for name, schema in ((SAMPLES_FILE, DocumentRecord), (BENCH_FILE, BenchRecord)):
            found |= {r.get(IDENTITY) for r in read_jsonl(self.dir / name, lambda _: None, schema)}
        return found

    def check_identity(self) -> None:
        """Refuse a directory holding records of another run than its `run.json` (say, one deleted and rewritten)."""
        expected = self.meta.get(IDENTITY)
        for name, schema in ((SAMPLES_FILE, self._sample_schema()), (BENCH_FILE, BenchRecord)):
            for record in read_jsonl(self.dir / name, lambda _: None, schema):
                if record.get(IDENTITY) != expected:
                    raise MmxError(
                        f"{self.dir / name} holds records of another run (run_id {record.get(IDENTITY)}; "
                        f"{RUN_FILE} has {expected})",
                        "the run.json was replaced; restore the original, or pass a new --out directory",
                    )

    def _append(self, name: str, record: dict[str, Any]) -> None:
        path = self.dir / name
        if self.run_id is not None:
            record = {**record, IDENTITY: self.run_id}
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        try:
            if _ends_mid_line(path):  # a torn last line from a killed process must not swallow this record
                data = b"\n" + data
            with path.open("ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            raise MmxError(f"cannot write {path}: {err.strerror}", write_hint(err, "check the run directory")) from None

    def append_sample(self, record: dict[str, Any]) -> None:
        """Append one scored sample, durably, before the next one starts."""
        self._append(SAMPLES_FILE, record)

    def append_bench(self, record: dict[str, Any]) -> None:
        """Append one benchmark measurement."""
        self._append(BENCH_FILE, record)

    def _records(self, name: str, schema: type[Any], what: str) -> list[dict[str, Any]]:
        return list(read_jsonl(self.dir / name, self.on_corrupt, schema, what))

    def _sample_schema(self) -> type[SampleRecord]:
        """lm-eval documents have no length; every other run's samples must have one."""
        kind = self.meta.get("kind") if (self.dir / RUN_FILE).exists() else None
        return DocumentRecord if kind == "lm-eval" else SampleRecord

    def samples(self) -> list[dict[str, Any]]:
        """Every scored sample on disk; a sample recorded twice (never written by mmx) keeps its first copy."""
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for record in self._records(SAMPLES_FILE, self._sample_schema(), "sample"):
            key = sample_key(record)
            if key in seen and seen[key] != record:
                task, length, index = key
                (self.on_corrupt or _warn)(
                    f"{self.dir / SAMPLES_FILE}: {task} at length {length} #{index} is recorded twice, differently; "
                    "the first record counts"
                )
            seen.setdefault(key, record)
        return list(seen.values())

    def bench(self) -> list[dict[str, Any]]:
        """Every benchmark record on disk."""
        return self._records(BENCH_FILE, BenchRecord, "measurement")

    def done_keys(self) -> set[tuple[Any, ...]]:
        """Keys of the samples already on disk, which a resumed run skips."""
        return {sample_key(r) for r in self._records(SAMPLES_FILE, self._sample_schema(), "sample")}

    def write_summary(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace `summary.csv` atomically (task,length,n,score; score 0..100, empty when nothing scored)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": "" if row.get("score") is None else f"{row['score']:.2f}"})
        atomic_write(self.dir / SUMMARY_FILE, buf.getvalue(), "check the run directory")


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def sample_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a sample within a run: task, target length and index."""
    return (record.get("task"), record.get("length"), record.get("index"))
