"""The model's side of `mmx serve`: one generation at a time on one thread, a bounded line of requests waiting for it,
and text deltas for streams.

A request that waits too long in a full line is refused at once (503, try again later) rather than queued without end.
Every job carries a cancel flag: set before it starts, the job never runs; set while it runs, the generation stops at
its next step (`GenerationCancelled`) — that is how a client that leaves stops holding the model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from mmx.model.generate import GenerationCancelled
from mmx.workflows.serve.protocol import ApiError

T = TypeVar("T")
DEFAULT_MAX_QUEUE = 64


class ModelWorker:
    """Runs jobs on a single thread, in arrival order; at most `max_queue` wait behind the one running."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmx-model")
        self._lock = threading.Lock()
        self._pending = 0  # queued + running
        self._cancels: set[threading.Event] = set()
        self.closed = False

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Callable[[], T], cancel: threading.Event) -> Future[T]:
        """Queue `job`; a full line is an `ApiError` 503 with Retry-After, a closed worker a 503 too."""
        with self._lock:
            if self.closed:
                raise ApiError(503, "the server is shutting down", kind="server_error", code="shutting_down")
            if self._pending > self.max_queue:
                raise ApiError(
                    503,
                    f"the server is busy: {self._pending} requests are already waiting for the model; retry shortly",
                    kind="server_error",
                    code="server_busy",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
            self._cancels.add(cancel)

        def run() -> T:
            try:
                if cancel.is_set():
                    raise GenerationCancelled()
                return job()
            finally:
                with self._lock:
                    self._pending -= 1
                    self._cancels.discard(cancel)

        future = self._executor.submit(run)
        future.add_done_callback(_consume)
        return future

    def close(self) -> None:
        """Refuse new jobs, cancel those waiting or running, and wait for the model thread to finish."""
        with self._lock:
            self.closed = True
            for cancel in self._cancels:
                cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _consume(future: Future[Any]) -> None:
    """Fetch a finished job's exception so nothing logs it as never retrieved (the caller may have left)."""
    if not future.cancelled():
        future.exception()


class DeltaDecoder:
    """Text deltas from a growing list of token ids, as streaming servers release them: never half a UTF-8
    character, never text that could still turn out to be the start of a stop string, and nothing after a stop.

    Only a window of recent tokens is decoded each step (the prefix/read offsets of incremental detokenizers), so a
    long answer costs linear, not quadratic, decoding; decoding the window from an earlier token keeps the spaces
    sentencepiece-style tokenizers attach to a word's first piece.
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: list[str]) -> None:
        self.decode, self.stops = decode, [s for s in stops if s]
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of `text` released
        self.stopped = False
        self._prefix = self._read = 0

    def push(self, token: int) -> str:
        """Take one new token; return the text that can be released now."""
        if self.stopped:
            return ""
        self.ids.append(token)
        before = self.decode(self.ids[self._prefix : self._read])
        after = self.decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release()

    def finish(self, final: str) -> str:
        """The rest of the answer once generation is over (`final` is the answer as the non-streaming path gives it)."""
        if self.stopped or not final.startswith(self.text[: self.sent]):
            return ""
        rest, self.sent, self.text = final[self.sent :], len(final), final
        return rest

    def _release(self) -> str:
        window = max(0, self.sent - max((len(s) for s in self.stops), default=0))
        hits = [i for i in (self.text.find(s, window) for s in self.stops) if i >= 0]
        if hits:
            end, self.stopped = min(hits), True
        else:
            end = len(self.text) - _held(self.text, self.stops)
        delta = self.text[self.sent : max(self.sent, end)]
        self.sent = max(self.sent, end)
        return delta


def _held(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that begins some stop string (it may still become one)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
