"""Data-parallel sweeps: the ranks of a torchrun job split one run's samples, and rank 0 alone writes the run.

The job's N ranks form N / tp model replicas (`mmx.model.parallel.runtime`). Every rank knows what is already on disk
(rank 0 reads the run directory and broadcasts it), and from that alone every rank computes the same deal: the
pending (task, length, index) samples, longest lengths first, dealt round-robin to the replicas, so every replica
gets an even share of every length and the slowest prompts are spread before the rest. Each replica then runs the
ordinary sweep (`run_sweep`) over its share, in the usual order (length by length).

Rank 0 is the only process that opens the run directory: `run.json` written once, `samples.jsonl` appended and
fsynced record by record, exactly as a one-process run does. The other replicas' leaders send each scored record to
rank 0 as soon as it exists (point to point, over a gloo group of its own, so GPU collectives are never mixed in);
a thread on rank 0 appends them and advances the one progress bar of the whole job. A rank that is killed loses only
the batch it was working on; the job stops (torchrun ends the others), and rerunning the same command resumes from
what rank 0 wrote — nothing lost, nothing twice, and the same records a one-process run writes (in another order).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup

from mmx.model.parallel.runtime import ParallelContext
from mmx.results.store import RunStore, sample_key
from mmx.workflows.evaluate.progress import Progress, SilentProgress
from mmx.workflows.evaluate.sweep import summary_rows

# The records channel waits as long as a sweep may run: a rank's next record can be an hour away at 4M tokens.
RECORDS_TIMEOUT = timedelta(days=7)
_HEADER, _PAYLOAD = 1, 2  # message tags: a length (or DONE), then that many bytes of JSON
_DONE = -1

Item = tuple[str, int, int]  # (task, length, index)


def deal(items: Iterable[Item], replicas: int) -> dict[Item, int]:
    """The replica of each pending sample: longest lengths first (sweep order within a length), round-robin."""
    ordered = sorted(items, key=lambda item: -item[1])  # stable: task order and index order kept within a length
    return {item: n % replicas for n, item in enumerate(ordered)}


def pending_items(cells: Sequence[tuple[str, int]], samples: int, done: set[Any]) -> list[Item]:
    """Every (task, length, index) of `cells` not yet on disk, in sweep order."""
    return [(name, length, i) for name, length in cells for i in range(samples) if (name, length, i) not in done]


# ------------------------------------------------------------------------------------------------ the channel


def records_group() -> ProcessGroup:
    """A gloo group over every rank for records and bookkeeping, with a timeout as long as a sweep (collective:
    every rank must call it at the same point)."""
    return dist.new_group(backend="gloo", timeout=RECORDS_TIMEOUT)


def send_records(records: list[dict[str, Any]] | None, group: ProcessGroup) -> None:
    """To rank 0: a list of records, or None for "this rank is done"."""
    if records is None:
        dist.send(torch.tensor([_DONE], dtype=torch.int64), dst=0, group=group, tag=_HEADER)
        return
    data = json.dumps(records, ensure_ascii=False, default=str).encode()
    dist.send(torch.tensor([len(data)], dtype=torch.int64), dst=0, group=group, tag=_HEADER)
    dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst=0, group=group, tag=_PAYLOAD)


def receive_records(group: ProcessGroup) -> tuple[int, list[dict[str, Any]] | None]:
    """On rank 0: the next message from any rank, as (sender, records or None when that rank is done)."""
    header = torch.zeros(1, dtype=torch.int64)
    sender = dist.recv(header, group=group, tag=_HEADER)  # from whichever rank speaks first
    size = int(header.item())
    if size == _DONE:
        return sender, None
    payload = torch.empty(size, dtype=torch.uint8)
    dist.recv(payload, src=sender, group=group, tag=_PAYLOAD)
    return sender, json.loads(payload.numpy().tobytes())


# ------------------------------------------------------------------------------------------------ the writer


class RunWriter:
    """Rank 0's single writer: appends records from this rank and (on a thread) from every other leader."""

    def __init__(self, store: RunStore, progress: Progress, existing: list[dict[str, Any]], senders: int) -> None:
        self.store = store
        self.progress = progress
        self.records = list(existing)
        self.new_records = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._senders = senders
        self._thread: threading.Thread | None = None

    def start(self, group: ProcessGroup) -> None:
        """Listen for the other leaders' records until each has said it is done."""
        self._thread = threading.Thread(target=self._receive, args=(group,), name="mmx-run-writer", daemon=True)
        self._thread.start()

    def _receive(self, group: ProcessGroup) -> None:
        remaining = self._senders
        try:
            while remaining:
                _, records = receive_records(group)
                if records is None:
                    remaining -= 1
                else:
                    self.write(records)
        except BaseException as err:  # re-raised on the main thread by `finish`
            self.error = err

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append durably, count, advance the job's bar; one record at a time, from any thread."""
        with self._lock:
            for record in records:
                self.store.append_sample(record)
                self.records.append(record)
                self.new_records += 1
                self.progress.advance(1)

    def write_summary(self) -> None:
        with self._lock:
            self.store.write_summary(summary_rows(self.records))

    def finish(self) -> None:
        """Wait for every other leader's last record; raise what the listening thread met."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        self.write_summary()


class WriterStore:
    """What `run_sweep` sees as its store on rank 0: appends go through the writer, summaries cover the whole job."""

    def __init__(self, writer: RunWriter, existing: list[dict[str, Any]]) -> None:
        self.writer, self.existing = writer, existing

    def samples(self) -> list[dict[str, Any]]:
        return list(self.existing)

    def append_sample(self, record: dict[str, Any]) -> None:
        if self.writer.error is not None:  # the listening thread failed: stop rather than compute for nothing
            raise self.writer.error
        self.writer.write([record])

    def write_summary(self, rows: Any) -> None:
        self.writer.write_summary()


class SenderStore:
    """What `run_sweep` sees as its store on another replica's leader: each record goes to rank 0 at once."""

    def __init__(self, group: ProcessGroup, existing: list[dict[str, Any]]) -> None:
        self.group, self.existing = group, existing

    def samples(self) -> list[dict[str, Any]]:
        return list(self.existing)

    def append_sample(self, record: dict[str, Any]) -> None:
        send_records([record], self.group)

    def write_summary(self, rows: Any) -> None:
        """Rank 0 writes the summary."""


class MirrorStore(SenderStore):
    """A tensor-parallel follower computes what its leader computes; its records go nowhere."""

    def append_sample(self, record: dict[str, Any]) -> None:
        """Its leader reports this record."""


# ---------------------------------------------------------------------------------------------- progress


class JobProgress:
    """Rank 0's view of the job: one bar over every rank's samples, advanced by the writer as records land."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def begin(self, total: int, done: int) -> None:
        """Begun by the job, before the writer can advance it."""

    def cell(self, task: str, length: int, total: int, done: int) -> None:
        """Cells run on every replica at once: no per-cell bar."""

    def advance(self, count: int) -> None:
        """The writer advances the bar for every record it appends, this rank's included."""

    def note(self, message: str) -> None:
        self.progress.note(message)

    def end(self) -> None:
        """Ended once every rank's records are in."""


def follower_progress(context: ParallelContext) -> Progress:
    """Other ranks draw nothing; their warnings reach stderr, marked with the rank."""
    return SilentProgress(lambda m: print(f"warning: [rank {context.rank}] {m}", file=sys.stderr, flush=True))


def share_of(context: ParallelContext, cells: Sequence[tuple[str, int]], samples: int, done: set) -> Callable:
    """`run_sweep`'s share: the samples dealt to this rank's replica."""
    owner = deal(pending_items(cells, samples, done), context.dp)
    return lambda name, length, index: owner.get((name, length, index)) == context.dp_rank


def done_keys(records: list[dict[str, Any]]) -> set:
    return {sample_key(r) for r in records}
