"""An OpenAI-compatible HTTP server for one backend, so any completions client (lm-eval's `local-completions`, RULER's
client, mmx's own `openai:` backend) can drive an mmx or Hugging Face model.

Endpoints: `POST /v1/completions` (text or token-id prompts, `stop`, `echo` + `logprobs` for log-likelihoods),
`GET /v1/models`, `GET /health`, and vLLM's tokenizer endpoints `POST /tokenize`, `POST /detokenize`,
`GET /tokenizer_info`, which let clients count tokens exactly without a local tokenizer. Decoding is always greedy;
sampling parameters are accepted and ignored. Requests are handled on threads but reach the model one at a time.

Beyond the `Backend` protocol the server uses, when a backend has them: `prefix_ids` (tokens put before a text prompt,
for `/tokenize` with special tokens), `generate_tokens(prompt_ids, max_new_tokens, stop)` returning new token ids
(token-id prompts taken verbatim, and exact tokens for `logprobs`; without it token-id prompts are decoded to text and
the answers re-encoded), and `score_tokens(sequences, top_k, start)` returning, per sequence, one
`(logprob, greedy, top)` per position from `start` on, `top` being `((token_id, logprob), …)` best first (needed for
`logprobs`; without it such requests get a 400).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mmx.errors import MmxError
from mmx.model.backends.common import cut_at_stop

MAX_BODY_BYTES = 1 << 30  # a 4M-token prompt as token ids is ~40 MB of JSON; this bounds memory, not real requests
MAX_LOGPROBS = 20
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class ApiError(Exception):
    """A request the server refuses, sent back as OpenAI's error object with this HTTP status."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}


class CompletionService:
    """The HTTP-independent part: validate requests, run them on the backend under one lock, shape the responses."""

    def __init__(self, backend: Any, model_name: str | None = None) -> None:
        self.backend = backend
        self.description = backend.describe()
        self.model_name = model_name or str(self.description.get("name") or self.description.get("spec"))
        self.created = int(time.time())
        self.lock = threading.Lock()  # one model call at a time; tokenizers are not thread-safe either

    # --- small endpoints ---------------------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """`/v1/models`: the one served model, with its context length and mmx's description of it."""
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "mmx",
            "max_model_len": self.backend.max_context,
            "mmx": self.description,
        }
        return {"object": "list", "data": [card]}

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's `/tokenize`: the prompt's ids, with the backend's prefix when `add_special_tokens` (the default)."""
        self._check_model(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "`prompt` must be a string")
        with self.lock:
            ids = self.backend.tokenizer.encode(prompt)
        if _flag(body, "add_special_tokens", True):
            ids = list(self.backend.prefix_ids) + ids
        return {"tokens": ids, "count": len(ids), "max_model_len": self.backend.max_context}

    def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's `/detokenize`: the text of a list of ids."""
        self._check_model(body)
        ids = body.get("tokens")
        if not _is_ids(ids):
            raise ApiError(400, "`tokens` must be a list of token ids")
        with self.lock:
            return {"prompt": self.backend.tokenizer.decode(ids)}

    def tokenizer_info(self) -> dict[str, Any]:
        """`/tokenizer_info` (lm-eval's remote tokenizer probes it): special tokens and the context length."""
        tok = self.backend.tokenizer
        return {
            "tokenizer_class": type(tok).__name__,
            "eos_token": getattr(tok, "eos_token", None),
            "bos_token": getattr(tok, "bos_token", None),
            "pad_token": getattr(tok, "pad_token", None),
            "model_max_length": self.backend.max_context,
        }

    # --- completions ------------------------------------------------------------------------------------------------

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """`/v1/completions`: greedy continuations, and per-token log-probabilities when `logprobs` is set."""
        self._check_model(body)
        prompts = _prompts(body.get("prompt"))
        max_tokens = _int(body, "max_tokens", DEFAULT_MAX_TOKENS, low=0)
        logprobs = body.get("logprobs")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)):
            raise ApiError(400, "`logprobs` must be an integer or null")
        if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
            raise ApiError(400, f"`logprobs` must be between 0 and {MAX_LOGPROBS}")
        echo = _flag(body, "echo", False)
        stop = _stops(body.get("stop"))
        if _int(body, "n", 1, low=1) != 1 or _int(body, "best_of", 1, low=1) != 1:
            raise ApiError(400, "only n=1 is supported: decoding is greedy")
        if _flag(body, "stream", False):
            raise ApiError(400, "streaming is not supported; send stream=false")
        if logprobs is not None and not self.backend.supports("score_tokens"):
            raise ApiError(
                400, f"{self.model_name} does not report token log-probabilities", code="logprobs_unsupported"
            )
        with self.lock:
            return self._complete(prompts, max_tokens, logprobs, echo, stop)

    def _complete(
        self, prompts: list[str | list[int]], max_tokens: int, logprobs: int | None, echo: bool, stop: list[str]
    ) -> dict[str, Any]:
        backend, tok = self.backend, self.backend.tokenizer
        ids = [self._prompt_ids(p) for p in prompts]
        for prompt_ids in ids:
            if len(prompt_ids) + max_tokens > backend.max_context:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {backend.max_context} tokens. However, you requested "
                    f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the prompt, {max_tokens} in the "
                    "completion). Please reduce the prompt or the completion length.",
                    code="context_length_exceeded",
                )
        outputs = self._generate(prompts, ids, max_tokens, stop) if max_tokens > 0 else [("", [], False)] * len(ids)
        choices = []
        for index, (prompt, prompt_ids, (text, new_ids, full)) in enumerate(zip(prompts, ids, outputs, strict=True)):
            choice: dict[str, Any] = {
                "index": index,
                "text": (prompt if isinstance(prompt, str) else tok.decode(prompt)) + text if echo else text,
                "logprobs": None,
                "finish_reason": "length" if full else "stop",
            }
            if logprobs is not None:
                choice["logprobs"] = self._logprobs(prompt_ids, new_ids, logprobs, echo)
            choices.append(choice)
        new_tokens = [new_ids for _, new_ids, _ in outputs]
        prompt_tokens, completion_tokens = sum(map(len, ids)), sum(map(len, new_tokens))
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        """What the model reads: token-id prompts verbatim; text through the backend's own prompt layout."""
        if not isinstance(prompt, str):
            return prompt
        return self.backend.prompt_ids(prompt)

    def _generate(
        self, prompts: list[str | list[int]], ids: list[list[int]], max_tokens: int, stop: list[str]
    ) -> list[tuple[str, list[int], bool]]:
        """(text, its token ids, whether it used the whole budget) per prompt. With `generate_tokens` the ids are the
        model's own; otherwise the backend's text is re-encoded (token-id prompts are decoded for it first)."""
        tok = self.backend.tokenizer
        if self.backend.supports("generate_tokens"):
            outputs = []
            for new in self.backend.generate_tokens(ids, max_tokens, stop or None):
                text = cut_at_stop(tok.decode(new), stop)
                kept = new if len(text) == len(tok.decode(new)) else _tokens_within(tok, new, len(text))
                outputs.append((text, kept, len(kept) >= max_tokens))
            return outputs
        texts = [p if isinstance(p, str) else tok.decode(p) for p in prompts]
        outputs = []
        for text in self.backend.generate(texts, max_tokens, stop or None):
            new = tok.encode(text)
            outputs.append((text, new, len(new) >= max_tokens))
        return outputs

    def _logprobs(self, prompt_ids: list[int], new_ids: list[int], k: int, echo: bool) -> dict[str, Any]:
        """OpenAI's logprobs object for the completion (and, with echo, the prompt; its first token has none)."""
        tok = self.backend.tokenizer
        sequence = prompt_ids + new_ids
        start = 1 if echo else len(prompt_ids)
        shown = sequence if echo else new_ids
        scores = self.backend.score_tokens([sequence], top_k=k, start=start)[0] if len(sequence) > start else []
        token_logprobs: list[float | None] = [None] * (len(shown) - len(scores))
        top_logprobs: list[dict[str, float] | None] = [None] * (len(shown) - len(scores))
        for token, score in zip(sequence[len(sequence) - len(scores) :], scores, strict=True):
            logprob, top = score[0], score[2]
            token_logprobs.append(logprob)
            best: dict[str, float] = {}
            for candidate, value in [*top, (token, logprob)]:  # the chosen token is always listed, as vLLM does
                best.setdefault(tok.decode([candidate]), value)
            top_logprobs.append(best)
        pieces = [tok.decode([t]) for t in shown]
        offsets, at = [], 0
        for piece in pieces:
            offsets.append(at)
            at += len(piece)
        return {
            "tokens": pieces,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        }

    def _check_model(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        if name not in (None, "", self.model_name):
            raise ApiError(
                404,
                f"The model `{name}` does not exist; this server serves `{self.model_name}`",
                code="model_not_found",
            )


def _tokens_within(tok: Any, ids: list[int], chars: int) -> list[int]:
    """The longest prefix of `ids` whose text fits in `chars` characters (the tokens before a stop string)."""
    for count in range(1, len(ids) + 1):
        if len(tok.decode(ids[:count])) > chars:
            return ids[: count - 1]
    return ids


def _prompts(value: Any) -> list[str | list[int]]:
    """OpenAI's four prompt shapes (text, list of texts, token ids, list of token-id lists) as a list of prompts."""
    if isinstance(value, str):
        return [value]
    if _is_ids(value) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return list(value)
    if isinstance(value, list) and value and all(_is_ids(p) and p for p in value):
        return [list(p) for p in value]
    raise ApiError(400, "`prompt` must be a string, a list of strings, a list of token ids, or a list of those")


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return [s for s in value if s]
    raise ApiError(400, "`stop` must be a string, a list of strings, or null")


def _int(body: dict[str, Any], key: str, default: int, *, low: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ApiError(400, f"`{key}` must be an integer >= {low}")
    return value


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"`{key}` must be true or false")
    return value


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the service; every answer is JSON, every failure OpenAI's error object."""

    server: ModelServer
    server_version = "mmx-serve"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        routes = {
            "/v1/models": self.server.service.models,
            "/health": dict,
            "/tokenizer_info": self.server.service.tokenizer_info,
        }
        self._dispatch(lambda: routes[self._path()]() if self._path() in routes else self._missing())

    def do_POST(self) -> None:  # noqa: N802
        routes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "/v1/completions": self.server.service.complete,
            "/tokenize": self.server.service.tokenize,
            "/detokenize": self.server.service.detokenize,
        }
        self._dispatch(lambda: routes[self._path()](self._body()) if self._path() in routes else self._missing())

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _missing(self) -> dict[str, Any]:
        raise ApiError(404, f"no endpoint {self.command} {self._path()}", kind="not_found_error")

    def _body(self) -> dict[str, Any]:
        try:
            size = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length header") from None
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(size) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"request body is not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _dispatch(self, handle: Callable[[], dict[str, Any]]) -> None:
        started = time.perf_counter()
        try:
            self._authorize()
            status, payload = 200, handle()
        except ApiError as err:
            status, payload = err.status, err.body()
        except MmxError as err:  # the backend refused the input (e.g. too long for the model)
            status, payload = 400, ApiError(400, str(err)).body()
        except Exception as err:  # a model failure must answer the client, not drop the connection
            from mmx.model.memory import is_out_of_memory

            oom = is_out_of_memory(err)
            if not oom:
                traceback.print_exc()
            message = f"{type(err).__name__}: {err}".strip()
            payload = ApiError(500, message, kind="server_error", code="out_of_memory" if oom else None).body()
            status = 500
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.log is not None:
            took = time.perf_counter() - started
            self.server.log(f"{self.command} {self._path()} {status} {took:.3f}s")

    def _authorize(self) -> None:
        key = self.server.api_key
        if key is None or self._path() == "/health":
            return
        if self.headers.get("Authorization", "") != f"Bearer {key}":
            raise ApiError(401, "missing or wrong API key", kind="authentication_error", code="invalid_api_key")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Silence http.server's own access log; `_dispatch` logs through `server.log` instead."""


class ModelServer(ThreadingHTTPServer):
    """A threading HTTP server around a `CompletionService`; `port=0` picks a free port (see `url`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        service: CompletionService,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        api_key: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.service, self.api_key, self.log = service, api_key, log
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), _Handler)
        except OSError as err:
            raise MmxError(
                f"cannot listen on {host}:{port}: {err.strerror}", "choose another --port or --host"
            ) from None

    @property
    def url(self) -> str:
        """The base URL clients use (`openai:` + this), e.g. http://127.0.0.1:8000/v1."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/v1"


def make_server(
    backend: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ModelServer:
    """A server for `backend`, bound but not yet serving: call `serve_forever()` (and `shutdown()` from elsewhere)."""
    return ModelServer(CompletionService(backend, model_name), host, port, api_key=api_key, log=log)
