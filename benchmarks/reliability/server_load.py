"""A loopback server under load: `mmx serve` on a free port, then a bounded number of requests from a bounded pool of
clients — mostly well-formed completions, some malformed bodies — counting answers, 4xx, 5xx and connection resets.

Only the OpenAI-compatible surface is used (`GET /health`, `POST /v1/completions` with `prompt` and `max_tokens`),
so the phase measures whichever server `mmx serve` runs.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.reliability.common import env, mmx_argv

HOST = "127.0.0.1"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
    "boxing",
    "matches",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str, timeout: float = 5.0) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def served(model: str, workdir: Path, start_timeout: float = 300) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mmx serve --model MODEL` on a free loopback port until the block ends; yields (base URL …/v1, process)."""
    port = free_port()
    log = (workdir / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        mmx_argv("serve", "--model", model, "--host", HOST, "--port", port, "--quiet"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(workdir),
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mmx serve exited with {proc.returncode}; see {log.name}")
            try:
                if _get(port, "/health", timeout=2) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mmx serve did not answer /health within {start_timeout:.0f} s")
            time.sleep(0.2)
        yield f"http://{HOST}:{port}/v1", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _body(rng: random.Random) -> tuple[bytes, bool]:
    """A request body and whether it is well-formed."""
    if rng.random() < 0.8:
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 200)))
        return json.dumps({"prompt": prompt, "max_tokens": rng.randint(1, 16)}).encode(), True
    return rng.choice(
        [
            b"{not json",
            b"[]",
            b"{}",
            json.dumps({"prompt": 42, "max_tokens": 4}).encode(),
            json.dumps({"prompt": "hi", "max_tokens": -1}).encode(),
            json.dumps({"prompt": "hi", "max_tokens": "many"}).encode(),
            json.dumps({"prompt": ["hi", 3.5, None], "max_tokens": 2}).encode(),
            "\udcff".encode("utf-8", "surrogatepass"),
        ]
    ), False


@dataclass
class LoadResult:
    """What the clients saw."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # 2xx, 4xx, 5xx, reset, timeout, other
    malformed_accepted: int = 0  # malformed bodies answered 2xx
    wall_s: float = 0.0

    @property
    def answered(self) -> int:
        return self.outcomes["2xx"] + self.outcomes["4xx"] + self.outcomes["5xx"] + self.outcomes["other"]

    def line(self) -> str:
        o = self.outcomes
        return (
            f"requests sent {self.sent} · answered {self.answered} ({o['2xx']} completions, {o['4xx']} refused with "
            f"4xx) · 5xx {o['5xx']} · resets {o['reset']} · timeouts {o['timeout']} · malformed accepted "
            f"{self.malformed_accepted} · {self.wall_s:.1f} s"
        )


def _send(port: int, body: bytes, timeout: float) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        status = conn.getresponse().status
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        return "reset"
    except TimeoutError:
        return "timeout"
    except OSError:
        return "reset"
    finally:
        conn.close()
    return f"{status // 100}xx" if status // 100 in (2, 4, 5) else "other"


def load(url: str, requests: int, concurrency: int, time_limit: float, seed: int) -> LoadResult:
    """Send up to `requests` requests from `concurrency` clients, stopping new ones after `time_limit` seconds."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    rng = random.Random(seed)
    bodies = [_body(rng) for _ in range(requests)]
    result = LoadResult()
    start = time.monotonic()

    def one(item: tuple[bytes, bool]) -> tuple[str, bool] | None:
        if time.monotonic() - start > time_limit:
            return None
        return _send(port, item[0], timeout=max(5.0, time_limit)), item[1]

    with ThreadPoolExecutor(concurrency) as pool:
        for done in pool.map(one, bodies):
            if done is None:
                continue
            outcome, well_formed = done
            result.sent += 1
            result.outcomes[outcome] += 1
            result.malformed_accepted += outcome == "2xx" and not well_formed
    result.wall_s = time.monotonic() - start
    return result


def server_phase(workdir: Path, requests: int, concurrency: int, time_limit: float, seed: int) -> LoadResult:
    """Serve random tiny weights and load the server; a server that never answers /health counts every request
    as unanswered."""
    try:
        with served("random:tiny", workdir) as (url, proc):
            result = load(url, requests, concurrency, time_limit, seed)
            if proc.poll() is not None:
                result.outcomes["server died"] += 1
            elif _get(int(url.rsplit(":", 1)[1].split("/")[0]), "/health") != 200:
                result.outcomes["unhealthy after load"] += 1
            return result
    except RuntimeError as err:
        result = LoadResult()
        result.outcomes[f"not started: {err}"] += 1
        return result
