"""The HTTP face of `mmx serve`: a FastAPI app with OpenAI's and vLLM's routes, server-sent event streams, an API
key on every route, and OpenAI's JSON error object for every failure (unknown routes and wrong methods included).

The model works on its own thread (`ModelService.worker`); the event loop only parses, waits and streams. A request
whose client goes away is cancelled: a streaming one when its response is dropped, a non-streaming one by polling for
the disconnect while it waits. A request body must arrive within `read_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mmx.errors import MmxError
from mmx.model.generate import GenerationCancelled
from mmx.workflows.serve.protocol import ApiError
from mmx.workflows.serve.service import Choice, ModelService, Plan
from mmx.workflows.serve.worker import DeltaDecoder

MAX_BODY_BYTES = 1 << 30  # a 4M-token prompt as token ids is ~40 MB of JSON; this bounds memory, not real requests
DEFAULT_READ_TIMEOUT = 60.0  # seconds for a request body to arrive
POLL = 0.5  # seconds between checks that the server is stopping (clients that leave are noticed at once)

Log = Callable[[str], None]


def create_app(
    service: ModelService,
    *,
    api_key: str | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    log: Log | None = None,
    drain: Drain | None = None,
) -> Any:
    """The ASGI app for `service`, wrapped in the API-key and access-log gate; `drain` says when the server stops."""
    drain = drain or Drain()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.worker.close)  # cancel what is left, then let the model thread finish

    app = FastAPI(title="mmx serve", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        message = "no such endpoint" if err.status_code == 404 else str(err.detail)
        return error_response(ApiError(err.status_code, message, kind=kind))

    async def body_of(request: Request) -> dict[str, Any]:
        return await read_json(request, read_timeout)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, "waiting": service.worker.pending}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        return service.tokenizer_info()

    for path in ("/tokenize", "/v1/tokenize"):
        app.post(path)(endpoint(lambda request: _off_loop(service.tokenize, body_of(request))))
    for path in ("/detokenize", "/v1/detokenize"):
        app.post(path)(endpoint(lambda request: _off_loop(service.detokenize, body_of(request))))

    @app.post("/v1/completions")
    @endpoint
    async def completions(request: Request) -> Any:
        plan = await _off_loop(service.plan_completion, body_of(request))
        return await answer(service, request, plan, drain)

    @app.post("/v1/chat/completions")
    @endpoint
    async def chat(request: Request) -> Any:
        plan = await _off_loop(service.plan_chat, body_of(request))
        return await answer(service, request, plan, drain)

    return Gate(app, api_key=api_key, log=log)


def endpoint(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    """A route whose every failure is OpenAI's error object: refusals as 4xx, model failures as 500 (with the code
    `out_of_memory` when it ran out of memory, which clients such as mmx's own back off from)."""

    async def route(request: Request) -> Response:
        try:
            result = await handler(request)
        except Exception as err:  # a model failure must answer the client, not drop the connection
            return error_response(_failure(err))
        return result if isinstance(result, Response) else JSONResponse(result)

    return route


def server_error(err: BaseException) -> ApiError:
    from mmx.model.memory import is_out_of_memory

    oom = is_out_of_memory(err)
    message = f"{type(err).__name__}: {err}".strip()
    return ApiError(500, message, kind="server_error", code="out_of_memory" if oom else None)


def _failure(err: Exception) -> ApiError:
    """What a client is told about `err`: refusals as they are, the backend's MmxError as a 400, else a 500."""
    if isinstance(err, ApiError):
        return err
    return ApiError(400, str(err)) if isinstance(err, MmxError) else server_error(err)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _off_loop(work: Callable[[dict[str, Any]], Any], body: Awaitable[dict[str, Any]]) -> Any:
    """Run tokenizer-bound work on a worker thread, so a long prompt does not stall other clients."""
    return await run_in_threadpool(work, await body)


async def read_json(request: Request, timeout: float) -> dict[str, Any]:
    """The request body as a JSON object: at most MAX_BODY_BYTES, arriving within `timeout` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ApiError(413 if declared.isdigit() else 400, f"the request body must be at most {MAX_BODY_BYTES} bytes")

    async def collect() -> bytes:
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes")
            parts.append(part)
        return b"".join(parts)

    try:
        raw = await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:  # noqa: UP041 (not yet the builtin TimeoutError on Python 3.10)
        message = f"the request body did not arrive within {timeout:g} s"
        raise ApiError(408, message, code="read_timeout", headers={"Connection": "close"}) from None
    try:
        body = await run_in_threadpool(json.loads, raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON ({err})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


class Drain:
    """The server's shutdown as requests see it: once `stopping()` turns true, running requests get `grace`
    seconds to finish, then their generations are cancelled and they end with a 503 (or an error event)."""

    def __init__(self, stopping: Callable[[], bool] | None = None, grace: float = 30.0) -> None:
        self.stopping, self.grace = stopping or (lambda: False), grace
        self.since: float | None = None

    def overdue(self) -> bool:
        if not self.stopping():
            return False
        if self.since is None:
            self.since = time.monotonic()
        return time.monotonic() - self.since >= self.grace


SHUTTING_DOWN = ApiError(503, "the server is shutting down", kind="server_error", code="shutting_down")


async def answer(service: ModelService, request: Request, plan: Plan, drain: Drain) -> Response:
    """Generate for `plan`: a JSON answer, or an event stream when the request asked for one."""
    cancel = threading.Event()
    if plan.sampling.stream:
        return stream(service, plan, cancel, drain)
    future = _watched(asyncio.wrap_future(service.worker.submit(lambda: service.run(plan, cancel), cancel)))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        while not future.done():
            await asyncio.wait({future, gone}, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
            if future.done():
                break
            if gone.done():
                cancel.set()  # the generation stops at its next step; nobody is left to answer
                return Response(status_code=499)
            if drain.overdue():
                cancel.set()
        choices = future.result()
    except GenerationCancelled:
        return error_response(SHUTTING_DOWN) if drain.overdue() else Response(status_code=499)
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        gone.cancel()
    return JSONResponse(service.response(plan, choices))


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (its body is read, so the next message can only be the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def stream(service: ModelService, plan: Plan, cancel: threading.Event, drain: Drain) -> StreamingResponse:
    """Server-sent events as OpenAI streams them: chunks as tokens come, a final chunk with `finish_reason`, the usage
    chunk when `stream_options.include_usage`, then `[DONE]`. With `logprobs` the answer comes whole in one chunk,
    after the log-probabilities are computed. A failure mid-stream is an `error` event before `[DONE]`. A client
    that leaves cancels the generation (the response is dropped, and with it this generator)."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    buffered = plan.sampling.logprobs is not None

    def on_token(row: int, token: int) -> None:
        loop.call_soon_threadsafe(tokens.put_nowait, (row, token))

    job = service.worker.submit(lambda: service.run(plan, cancel, None if buffered else on_token), cancel)
    future = _watched(asyncio.wrap_future(job))
    decoders = [DeltaDecoder(service.backend.tokenizer.decode, plan.sampling.stop) for _ in plan.ids]

    async def events() -> AsyncIterator[str]:
        getter: asyncio.Future[tuple[int, int]] | None = None
        try:
            for chunk in service.opening_chunks(plan):
                yield sse(chunk)
            while not future.done() or not tokens.empty():
                if drain.overdue():
                    cancel.set()
                if tokens.empty():
                    getter = getter if getter is not None and not getter.done() else asyncio.ensure_future(tokens.get())
                    await asyncio.wait({getter, future}, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        continue
                    row, token = getter.result()
                else:
                    row, token = tokens.get_nowait()
                delta = decoders[row].push(token)
                if delta:
                    yield sse(service.chunk(plan, row, delta))
            choices: list[Choice] = future.result()
            for row, choice in enumerate(choices):
                rest = choice.text if buffered else decoders[row].finish(choice.text)
                if rest or buffered:
                    yield sse(service.chunk(plan, row, rest, logprobs=choice.logprobs))
                yield sse(service.chunk(plan, row, "", finish=choice.finish_reason))
            if plan.sampling.include_usage:
                yield sse(service.usage_chunk(plan, choices))
        except asyncio.CancelledError:  # the client left: stop the generation at its next step
            cancel.set()
            raise
        except GenerationCancelled:
            yield sse(SHUTTING_DOWN.body())
        except Exception as err:
            yield sse(_failure(err).body())
        finally:
            if getter is not None:
                getter.cancel()
            if not future.done():
                cancel.set()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _watched(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """`future`, with its outcome fetched when it ends even if nobody is left to await it (a client that left)."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class Gate:
    """ASGI middleware in front of every route: the API key (when set) and one access-log line per request."""

    def __init__(self, app: Any, *, api_key: str | None, log: Log | None) -> None:
        self.app, self.api_key, self.log = app, api_key, log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if self.api_key is not None and not self._authorized(scope):
            refusal = ApiError(401, "missing or wrong API key", kind="authentication_error", code="invalid_api_key")
            await error_response(refusal)(scope, receive, record)
        else:
            await self.app(scope, receive, record)
        if self.log is not None:
            self.log(f"{scope['method']} {scope['path']} {status[0]} {time.perf_counter() - started:.3f}s")

    def _authorized(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        return hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode())
