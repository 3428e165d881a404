"""`mmx serve`: an OpenAI-compatible server for one backend, so any OpenAI client (the `openai` package, lm-eval's
`local-completions` and `local-chat-completions`, RULER's client, mmx's own `openai:` backend) can drive an mmx or
Hugging Face model.

Endpoints: `POST /v1/completions` and `POST /v1/chat/completions` (both streaming with `stream: true`, both with
`logprobs`, `echo` and `usage`), `GET /v1/models`, `GET /health`, and vLLM's tokenizer endpoints `POST /tokenize`,
`POST /detokenize`, `GET /tokenizer_info`, which let clients count tokens exactly without a local tokenizer. Decoding is
always greedy.

It runs on uvicorn (the `serve` extra: FastAPI + uvicorn). The socket is bound before serving, with a listen backlog
for many clients; one model call runs at a time while a bounded line waits (a full line answers 503 at once). A
connection that sends no complete request head within the read timeout, or a malformed one, gets a JSON 408/400. On
SIGTERM or Ctrl-C the server stops accepting, lets running requests finish for up to `shutdown_timeout` seconds,
cancels the rest, and returns normally.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from mmx.errors import MmxError
from mmx.workflows.serve.service import DEFAULT_MAX_TOKENS_CAP, ModelService
from mmx.workflows.serve.worker import DEFAULT_MAX_QUEUE

try:
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # the `serve` extra
    raise MmxError("mmx serve needs FastAPI and uvicorn", "pip install 'mmx[serve]'") from None

from mmx.workflows.serve.app import DEFAULT_READ_TIMEOUT, Drain, create_app  # noqa: E402 (needs the extra)

BACKLOG = 2048  # connections the kernel holds before they are accepted
KEEP_ALIVE = 30  # seconds an idle connection stays open (aiohttp pools connections for 15 s, httpx for 5 s)
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
SHUTDOWN_MARGIN = 5.0  # seconds uvicorn waits beyond the grace period before it cancels what is still running


def _protocol(read_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, answering in JSON where it would answer in plain text, and closing connections whose
    request head does not arrive within `read_timeout` seconds."""

    class JsonH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(read_timeout, self._head_overdue)

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None:  # a request head arrived: the app times the body
                self._head_timer.cancel()

        def _head_overdue(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self._send_json(408, "the request did not arrive in time", "read_timeout")

        def send_400_response(self, msg: str) -> None:
            self._send_json(400, f"malformed HTTP request ({msg.rstrip('.')})", None)

        def _send_json(self, status: int, message: str, code: str | None) -> None:
            import h11

            error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
            body = json.dumps({"error": error}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"connection", b"close"),
                (b"content-length", str(len(body)).encode()),
            ]
            try:
                if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    head = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode())
                    self.transport.write(self.conn.send(head))
                    self.transport.write(self.conn.send(h11.Data(data=body)))
                    self.transport.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    return JsonH11Protocol


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before serving so a taken port is one clear error and port 0 is known at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OverflowError:
        raise MmxError(f"cannot listen on port {port}", "use a port from 0 to 65535 (0 picks a free one)") from None
    except OSError as err:
        raise MmxError(f"cannot listen on {host}:{port}: {err.strerror}", "choose another --port or --host") from None


class ModelServer:
    """A uvicorn server for one `ModelService`: `run()` serves in this thread until SIGTERM/Ctrl-C (or `stop()`);
    `start()` serves from a background thread (tests, notebooks)."""

    def __init__(
        self,
        service: ModelService,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        api_key: str | None = None,
        log: Callable[[str], None] | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.service = service
        self.socket = _bind(host, port)
        drain = Drain(lambda: self.server.should_exit, shutdown_timeout)
        app = create_app(service, api_key=api_key, read_timeout=read_timeout, log=log, drain=drain)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            backlog=BACKLOG,
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=shutdown_timeout + SHUTDOWN_MARGIN,  # requests end themselves first (Drain)
            http=_protocol(read_timeout),
            ws="none",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        """The base URL clients use (`openai:` + this), e.g. http://127.0.0.1:8000/v1."""
        host = self.socket.getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def run(self) -> None:
        """Serve until told to stop; in the main thread SIGTERM and Ctrl-C stop it gracefully."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> ModelServer:
        """Serve from a background thread; returns once the server accepts connections."""
        self.thread = threading.Thread(target=self.run, name="mmx-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("mmx serve did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down as on SIGTERM and wait for it."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        self.socket.close()


def make_server(
    backend: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    log: Callable[[str], None] | None = None,
    max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
    max_queue: int = DEFAULT_MAX_QUEUE,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> ModelServer:
    """A server for `backend`, bound but not yet serving. The model id clients use is `model_name`, else the
    backend's spec (`hf:/models/llama`, `mmx-mini`), which stays the same from run to run."""
    name = model_name or str(backend.describe().get("spec") or backend.describe().get("name"))
    service = ModelService(backend, name, max_tokens_cap=max_tokens_cap, max_queue=max_queue)
    return ModelServer(
        service, host, port, api_key=api_key, log=log, read_timeout=read_timeout, shutdown_timeout=shutdown_timeout
    )
