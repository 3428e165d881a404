"""A server that stays up for everyone: clients that leave stop their generation, a full line answers 503 at once,
many clients at once are all answered, slow or malformed requests get JSON, and SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mmx.model.backends.base import load_backend

LONG = 50_000  # new tokens no test waits for: only cancellation ends such a request quickly


@pytest.fixture(scope="module")
def native():
    return load_backend("random:tiny")


@pytest.fixture
def native_server(native, live_server):
    with live_server(native, max_tokens_cap=LONG, max_queue=1, read_timeout=1.0) as server:
        yield server


def wait_until_idle(server, timeout: float = 10.0) -> float:
    """Seconds until no request holds or waits for the model (fails after `timeout`)."""
    started = time.monotonic()
    while server.server.service.worker.pending:
        assert time.monotonic() - started < timeout, "the model is still busy"
        time.sleep(0.02)
    return time.monotonic() - started


def quick_answer(server) -> httpx.Response:
    return httpx.post(f"{server.url}/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)


def test_a_client_that_leaves_stops_its_generation(native_server):
    body = {"prompt": "hi", "max_tokens": LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{native_server.url}/completions", json=body, timeout=1.0)
    wait_until_idle(native_server)
    assert quick_answer(native_server).status_code == 200

    with httpx.stream("POST", f"{native_server.url}/completions", json={**body, "stream": True}, timeout=30) as reply:
        first = next(reply.iter_lines())
        assert first.startswith("data: ")
    wait_until_idle(native_server)  # leaving a stream half-read cancels it too
    assert quick_answer(native_server).status_code == 200
    assert httpx.get(f"{native_server.root}/health").json()["waiting"] == 0


def test_a_full_line_answers_503_at_once(native_server):
    holder = httpx.Client(timeout=30)
    body = {"prompt": "hi", "max_tokens": LONG, "stream": True}
    stream = holder.stream("POST", f"{native_server.url}/completions", json=body)
    lines = stream.__enter__().iter_lines()  # kept: dropping the iterator would close the stream
    next(lines)  # the long request holds the model
    with ThreadPoolExecutor(3) as pool:
        waiting = pool.submit(quick_answer, native_server)  # max_queue=1: this one waits its turn
        deadline = time.monotonic() + 30
        while native_server.server.service.worker.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = [pool.submit(quick_answer, native_server) for _ in range(2)]
        answers = [f.result() for f in refused]
        assert [a.status_code for a in answers] == [503, 503], [a.text for a in answers]
        assert all(a.json()["error"]["code"] == "server_busy" and a.headers["retry-after"] for a in answers)
        stream.__exit__(None, None, None)  # the long request's client leaves: the waiting one runs
        assert waiting.result().status_code == 200
    holder.close()


def test_fifty_clients_at_once_are_all_answered(native, live_server):
    with live_server(native) as server:

        def ask(i: int) -> str:  # every request goes through the model's line; the answer is the echoed prompt
            body = {"prompt": f"Question {i}", "max_tokens": 0, "echo": True}
            return httpx.post(f"{server.url}/completions", json=body, timeout=120).json()["choices"][0]["text"]

        with ThreadPoolExecutor(50) as pool:
            assert list(pool.map(ask, range(50))) == [f"Question {i}" for i in range(50)]


def raw_exchange(server, data: bytes, wait: float = 5.0) -> tuple[int, dict]:
    """Send raw bytes, read until the server closes: (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"content-type: application/json" in head.lower()
    return status, json.loads(body)


def test_malformed_and_slow_requests_get_json(native_server):
    status, body = raw_exchange(native_server, b"NOT AN HTTP REQUEST\r\n\r\n")
    assert status == 400 and "malformed HTTP request" in body["error"]["message"]
    status, body = raw_exchange(native_server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # head never ends
    assert status == 408 and body["error"]["code"] == "read_timeout"
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    status, body = raw_exchange(native_server, head + b'{"prompt": ')  # the body never ends
    assert status == 408 and "did not arrive" in body["error"]["message"]
    assert quick_answer(native_server).status_code == 200


def test_sigterm_lets_the_server_finish_and_exit_cleanly():
    argv = [sys.executable, "-m", "mmx", "serve", "--model", "random:tiny", "--port", "0", "--quiet"]
    argv += ["--max-tokens-cap", str(LONG), "--shutdown-timeout", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        url = re.search(r"(http://\S+/v1)", lines.get(timeout=120)).group(1)
        first = threading.Event()
        outcome: list[object] = []

        def long_stream() -> None:
            body = {"prompt": "hi", "max_tokens": LONG, "stream": True}
            try:
                with httpx.stream("POST", f"{url}/completions", json=body, timeout=60) as reply:
                    for line in reply.iter_lines():
                        first.set()
                        outcome.append(line)
            except httpx.HTTPError as err:
                outcome.append(err)

        client = threading.Thread(target=long_stream)
        client.start()
        assert first.wait(60), "the stream did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        client.join(30)
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_one_line_before_the_model_loads(port, capsys):
    from mmx.commands.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", "random:tiny", "--port", port])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: bad --port") and err.count("\n") == 1, err


def test_a_port_the_socket_refuses_is_one_error():
    from mmx.errors import MmxError
    from mmx.workflows.serve.server import _bind

    with pytest.raises(MmxError, match="0 to 65535"):
        _bind("127.0.0.1", 70000)
