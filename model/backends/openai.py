"""`openai:URL`: any OpenAI-compatible server (`mmx serve`, vLLM, SGLang, …) behind the Backend protocol, in either
dialect.

This is how mmx evaluates models too big for one process, such as the 456B MiniMax-Text-01 on a multi-GPU engine.
Over the completions API (`api="completions"`) prompts go out as text (the server adds its own BOS), or as token ids
when a chat template is rendered here; log-likelihoods go out as token ids with `echo` + `logprobs`, so the scored
tokens are exactly ours. Over the chat API (`api="chat"`) each prompt is a conversation the server formats with its own
template: the answer prefix is an assistant message the server continues (`continue_final_message`, which vLLM,
SGLang and `mmx serve` understand) where its `/tokenize` shows it can, else the last line of the user message; the run
records which. Lengths are counted by the server's `/tokenize` (`remote`, the default when the server has it), a local
Hugging Face tokenizer (`tokenizer=DIR`), mmx's byte tokenizer (`byte`), or else a stated estimate (`estimate`).

Transient failures (connection refused or reset, timeouts, 429, 5xx) are retried with exponential backoff; once the
retries are spent, or for any other refusal, the caller gets one MmxError saying what went wrong. A server that reports
running out of memory raises `torch.OutOfMemoryError`, so the eval runner records an OOM cell instead of failing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from mmx.errors import MmxError

try:
    import httpx
except ImportError:  # the `serve` extra
    raise MmxError("openai: models need the httpx package", "pip install 'mmx[serve]'") from None

from mmx.model.backends.base import Backend, register_backend
from mmx.model.backends.chat import ChatTemplate, build_chat, chat_choice, hf_renderer, jinja_renderer
from mmx.model.backends.common import check_options, cut_at_stop
from mmx.model.hub import load_failure, locate
from mmx.model.tokenizer import ByteTokenizer, EstimatedTokenizer, HFTokenizer

DEFAULT_CONCURRENCY = 4
DEFAULT_BATCH_SIZE = 1  # prompts per request: servers batch concurrent requests themselves
DEFAULT_TIMEOUT = 600.0  # seconds for one response; a 1M-token prefill on a big model takes minutes
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 1.0  # seconds before the first retry; doubles each time
MAX_WAIT = 60.0  # cap on one backoff or Retry-After wait
API_KEY_VARS = ("MMX_API_KEY", "OPENAI_API_KEY")
# Tokens a chat template adds around a conversation, where nothing can count them (a stated estimate: Llama 3 adds
# about 10, ChatML about 5, templates with a default system prompt a few dozen).
CHAT_OVERHEAD_ESTIMATE = 32


def base_url(url: str) -> str:
    """The API root clients append `/completions` and `/models` to: `http://host:8000` -> `http://host:8000/v1`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise MmxError(f"bad server URL {url!r}", "write openai:http://HOST:PORT/v1")
    for suffix in ("/chat/completions", "/completions"):
        url = url.removesuffix(suffix)
    _, _, rest = url.partition("://")
    return url if "/" in rest else f"{url}/v1"


class RequestFailed(MmxError):
    """A request that failed for good; `transient` says whether retrying it might have helped."""

    def __init__(self, message: str, hint: str, *, transient: bool) -> None:
        super().__init__(message, hint)
        self.transient = transient


class ApiClient:
    """JSON over HTTP with retries. One instance is shared by the worker threads (httpx clients are thread-safe)."""

    def __init__(
        self, base: str, *, timeout: float, retries: int, backoff: float, concurrency: int, api_key: str | None
    ) -> None:
        self.base = base
        self.root = base.removesuffix("/v1")  # where vLLM-style /tokenize and /health live
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.http = httpx.Client(timeout=timeout, headers=headers, limits=limits)

    def post(self, url: str, body: dict[str, Any], abort: threading.Event | None = None) -> dict[str, Any]:
        return self.request("POST", url, body, abort)

    def get(self, url: str) -> dict[str, Any]:
        return self.request("GET", url, None, None)

    def request(
        self, method: str, url: str, body: dict[str, Any] | None, abort: threading.Event | None
    ) -> dict[str, Any]:
        """The parsed JSON answer; transient failures are retried, with the waits doubling from `backoff`."""
        attempts = 0
        while True:
            attempts += 1
            wait_s = self.backoff * 2 ** (attempts - 1)
            try:
                response = self.http.request(method, url, json=body)
            except httpx.TimeoutException:
                failure = RequestFailed(
                    f"the model server at {self.base} did not answer within {self.timeout:g} s",
                    "raise --timeout, or lower --concurrency or --batch-size",
                    transient=True,
                )
            except httpx.TransportError as err:
                failure = RequestFailed(
                    f"cannot reach the model server at {self.base} ({_reason(err)})",
                    "start it (e.g. `mmx serve --model …`) or check the URL and port",
                    transient=True,
                )
            else:
                if response.status_code < 400:
                    return _json(response, url)
                failure = _refusal(response, url)
                wait_s = _retry_after(response, wait_s)
            if not failure.transient or attempts > self.retries or (abort is not None and abort.is_set()):
                if failure.transient and attempts > 1:
                    failure.message = f"{failure.message} (after {attempts} attempts)"
                raise failure
            if abort is None:
                time.sleep(min(wait_s, MAX_WAIT))
            elif abort.wait(min(wait_s, MAX_WAIT)):  # another request failed for good: stop waiting at once
                raise failure


def _reason(err: httpx.TransportError) -> str:
    if isinstance(err, httpx.ConnectError):
        return "connection refused" if "refused" in str(err).lower() else f"connect failed: {err}"
    if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "connection closed by the server"
    return str(err) or type(err).__name__


def _json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise MmxError(f"{url} answered with something other than a JSON object", "is this an OpenAI-compatible URL?")
    return data


def _error_text(response: httpx.Response) -> tuple[str, str | None]:
    """The server's error message and code, from OpenAI's `{"error": {...}}` or the common `detail`/`message`."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase, None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or str(error)
        return str(message)[:500], error.get("code") if isinstance(error.get("code"), str) else None
    return str(error)[:500], None


def _refusal(response: httpx.Response, url: str) -> RequestFailed:
    """What an error status means for the user; 429 and 5xx are worth retrying, the rest are not. A server out of
    memory raises `torch.OutOfMemoryError` at once (retrying the same request would fail the same way)."""
    status = response.status_code
    message, code = _error_text(response)
    said = f"HTTP {status}: {message}"
    if code == "out_of_memory":
        import torch

        raise torch.OutOfMemoryError(f"the model server ran out of memory ({message})")
    if code == "context_length_exceeded" or "maximum context length" in message.lower():
        return RequestFailed(
            f"the prompt is too long for the server's model ({message})",
            "use shorter lengths, or serve the model with a longer context",
            transient=False,
        )
    if status in (401, 403):
        keys = " or ".join(API_KEY_VARS)
        return RequestFailed(f"the model server refused the API key ({said})", f"set {keys}", transient=False)
    if status == 404:
        return RequestFailed(
            f"the model server has no such model or endpoint at {url} ({said})",
            "check --api-model against the server's /v1/models, and the URL",
            transient=False,
        )
    if status == 429:
        return RequestFailed(
            f"the model server is rate-limiting requests ({said})", "lower --concurrency", transient=True
        )
    if status >= 500 or status == 408:
        return RequestFailed(f"the model server failed ({said})", "see the server's log", transient=True)
    return RequestFailed(f"the model server rejected the request ({said})", "check the model options", transient=False)


def _retry_after(response: httpx.Response, default: float) -> float:
    """Seconds the server asked us to wait (Retry-After), else our own backoff."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return default


class RemoteTokenizer:
    """The server's tokenizer over vLLM's `/tokenize` and `/detokenize`: exact counts without local files."""

    def __init__(self, client: ApiClient, model: str) -> None:
        self.client, self.model = client, model

    def encode(self, text: str) -> list[int]:
        data = self.client.post(
            f"{self.client.root}/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
        )
        return _ids(data.get("tokens"), "/tokenize")

    def encode_chat(
        self, messages: list[dict[str, str]], continue_final: bool, add_generation_prompt: bool | None = None
    ) -> list[int]:
        """The ids the server's chat template gives a conversation (vLLM's and SGLang's `/tokenize` take messages)."""
        body = {
            "model": self.model,
            "messages": messages,
            "add_generation_prompt": not continue_final if add_generation_prompt is None else add_generation_prompt,
            "continue_final_message": continue_final,
            "add_special_tokens": False,
        }
        return _ids(self.client.post(f"{self.client.root}/tokenize", body).get("tokens"), "/tokenize")

    def decode(self, ids: list[int]) -> str:
        data = self.client.post(f"{self.client.root}/detokenize", {"model": self.model, "tokens": list(ids)})
        text = data.get("prompt", data.get("text"))  # vLLM says `prompt`, SGLang `text`
        if not isinstance(text, str):
            raise MmxError("the server's /detokenize answered without the text", "pass --tokenizer DIR")
        return text

    def describe(self) -> dict[str, Any]:
        return {"type": "remote", "url": f"{self.client.root}/tokenize"}


def _ids(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
        raise MmxError(f"the server's {where} answered without a list of token ids", "pass --tokenizer DIR")
    return value


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible server, over the completions API (concurrent greedy completions and
    echo-based log-likelihoods) or the chat API (one conversation per request, the answer prefix as an assistant
    prefill where the server can continue a message)."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        tokenizer: str | None = None,
        api: str | None = None,
        chat_template: str | None = None,
        system_prompt: str | None = None,
        concurrency: int | None = None,
        batch_size: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        max_context: int | None = None,
    ) -> None:
        self.url = base_url(url)
        self.spec = f"openai:{url}"
        self.concurrency = max(1, int(concurrency or DEFAULT_CONCURRENCY))
        self.batch_size = max(1, int(batch_size or DEFAULT_BATCH_SIZE))
        self.api_key_var = next((v for v in API_KEY_VARS if os.environ.get(v)), None)
        self.client = ApiClient(
            self.url,
            timeout=float(timeout or DEFAULT_TIMEOUT),
            retries=DEFAULT_RETRIES if retries is None else int(retries),
            backoff=DEFAULT_BACKOFF if backoff is None else float(backoff),
            concurrency=self.concurrency,
            api_key=os.environ.get(self.api_key_var) if self.api_key_var else None,
        )
        card = self._model_card(model)
        self.model: str = card["id"]
        # `mmx serve` describes its model; where it runs is kept apart, since a run may resume on another device.
        served = card.get("mmx") if isinstance(card.get("mmx"), dict) else {}
        self.served_device = served.get("device")
        self.served = {key: value for key, value in served.items() if key != "device"}
        # None: the server does not say, so every length is tried and the server refuses what does not fit.
        self.max_context: int | None = max_context or card.get("max_model_len") or None
        self.tokenizer, self.prefix_ids, self.counts = self._tokenizer(tokenizer)
        self.api = _choose_api(api, chat_template, card.get("capabilities"))
        self.remote_chat = self.api == "chat" and self._counts_chat()
        self.chat = self._chat_format(chat_template, system_prompt)
        if self.api == "completions":  # the server's chat template plays no part in completions
            self.served.pop("chat_template", None)

    def _model_card(self, wanted: str | None) -> dict[str, Any]:
        """The `/v1/models` entry to use: the one named, or the server's first."""
        cards = self.client.get(f"{self.url}/models").get("data")
        if not isinstance(cards, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in cards):
            raise MmxError(f"{self.url}/models did not list models", "is this an OpenAI-compatible URL?")
        if not cards:
            raise MmxError(f"the server at {self.url} serves no model", "check the server")
        if wanted is None:
            return cards[0]
        for card in cards:
            if card["id"] == wanted:
                return card
        names = ", ".join(c["id"] for c in cards)
        raise MmxError(f"the server at {self.url} does not serve {wanted!r}", f"it serves: {names} (--api-model)")

    def _tokenizer(self, option: str | None) -> tuple[Any, list[int], str]:
        """The tokenizer for lengths, the ids the server puts before a text prompt (its BOS, if any), and how exact
        counts are: `remote` (the server's /tokenize), `local` (`--tokenizer DIR`) or `estimate` (neither)."""
        remote_prefix = self._remote_prefix()
        choice = option or "auto"
        if choice in ("auto", "remote"):
            if remote_prefix is not None:
                return RemoteTokenizer(self.client, self.model), remote_prefix, "remote"
            if choice == "remote":
                raise MmxError(
                    f"the server at {self.url} cannot count tokens for us (no /tokenize endpoint)",
                    "pass --tokenizer DIR (the model's Hugging Face tokenizer), or leave --tokenizer out to estimate",
                )
            return EstimatedTokenizer(), [], "estimate"
        if choice == "estimate":
            return EstimatedTokenizer(), [], "estimate"
        if choice == "byte":
            return ByteTokenizer(), remote_prefix or [], "local"
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise MmxError("--tokenizer DIR needs the transformers package", "pip install 'mmx[hf]'") from None
        locate(choice)
        try:
            tok = AutoTokenizer.from_pretrained(choice)
        except (OSError, ValueError) as err:
            raise load_failure(choice, err, "tokenizer") from None
        prefix = remote_prefix if remote_prefix is not None else tok("", add_special_tokens=True)["input_ids"]
        return HFTokenizer(tok), prefix, "local"

    def _remote_prefix(self) -> list[int] | None:
        """The server's special-token prefix via `/tokenize`; None when the server has no such endpoint."""
        body = {"model": self.model, "prompt": "", "add_special_tokens": True}
        try:
            return _ids(self.client.post(f"{self.client.root}/tokenize", body).get("tokens"), "/tokenize")
        except RequestFailed as err:
            if err.transient:
                raise
            return None

    def _counts_chat(self) -> bool:
        """Whether the server's /tokenize lays out conversations with an open final message — a server that does
        (vLLM, SGLang, mmx serve) continues an assistant message in chat requests too."""
        if not isinstance(self.tokenizer, RemoteTokenizer):
            return False
        probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        try:
            return bool(self.tokenizer.encode_chat(probe, continue_final=True))
        except RequestFailed as err:
            if err.transient:
                raise
            return False
        except MmxError:
            return False

    def _chat_format(self, option: str | None, system: str | None) -> ChatTemplate | None:
        """The chat format: the server's template over the chat API, or one rendered here for the completions API
        (the model's own from `--tokenizer DIR` or the server's /tokenizer_info, or a Jinja file)."""
        tok = self.tokenizer.tok if isinstance(self.tokenizer, HFTokenizer) else None
        info = self._tokenizer_info() if tok is None else {}
        own = getattr(tok, "chat_template", None) if tok is not None else info.get("chat_template")
        specials = {"bos_token": info.get("bos_token"), "eos_token": info.get("eos_token")}

        def renderer(template: str) -> Any:
            return hf_renderer(tok, template) if tok is not None else jinja_renderer(template, specials)

        bos = tok.bos_token if tok is not None else specials["bos_token"]
        if self.api == "completions":
            return build_chat(
                option, own=own, renderer=renderer, system=system, bos_token=bos, where="the model's tokenizer"
            )
        if option is not None and chat_choice(option) not in ("auto",):
            raise MmxError(
                "with --api chat the server applies its own chat template",
                "drop --chat-template (or use --api completions to render a template here)",
            )
        return ChatTemplate(
            source="server",
            template=own,
            renderer=renderer(own) if own and tok is not None else None,
            system=system,
            prefill="assistant" if self.remote_chat else "user_line",
            bos_token=bos,
        )

    def _tokenizer_info(self) -> dict[str, Any]:
        """vLLM's `/tokenizer_info` (special tokens, chat template), or nothing when the server has none."""
        try:
            return self.client.get(f"{self.client.root}/tokenizer_info")
        except RequestFailed as err:
            if err.transient:
                raise
            return {}

    # --- Backend protocol --------------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids the model reads; over the chat API a plain text is a user message too."""
        if self.api == "chat":
            messages, open_end = self.chat.messages(prompt)
            return self.chat_ids(messages, continue_final=open_end)
        if self.counts == "estimate":
            raise MmxError("the server's token ids are unknown here (no /tokenize)", "pass --tokenizer DIR")
        return super().prompt_ids(prompt)

    def prompt_length(self, prompt: str) -> int:
        """Tokens the model reads: exact through the server or a local tokenizer, else the stated estimate."""
        if self.counts != "estimate" and (self.api == "completions" or self.remote_chat or self.chat.renders_locally):
            return len(self.prompt_ids(prompt))
        overhead = CHAT_OVERHEAD_ESTIMATE if self.api == "chat" else 0
        system = len(self.tokenizer.encode(self.chat.system)) if self.chat is not None and self.chat.system else 0
        return len(self.tokenizer.encode(str(prompt))) + overhead + system

    def chat_ids(
        self,
        messages: list[dict[str, str]],
        *,
        continue_final: bool = False,
        add_generation_prompt: bool | None = None,
    ) -> list[int]:
        """A conversation's ids: the server's own count over the chat API where its /tokenize takes messages."""
        if self.api == "chat" and self.remote_chat:
            opens = not continue_final if add_generation_prompt is None else add_generation_prompt
            return self.tokenizer.encode_chat(messages, continue_final, opens and not continue_final)
        if self.api == "chat" and not self.chat.renders_locally:
            raise MmxError(
                "the server cannot list the tokens of a conversation (its /tokenize takes no messages)",
                "pass --tokenizer DIR with the model's chat template",
            )
        return super().chat_ids(messages, continue_final=continue_final, add_generation_prompt=add_generation_prompt)

    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        """Greedy completions: `batch_size` prompts per completions request, one conversation per chat request, and
        `concurrency` requests at once."""
        stops = [s for s in (stop or []) if s]
        if self.api == "chat":

            def chat(chunk: list[str], abort: threading.Event) -> list[str]:
                return [self._chat_request(p, max_new_tokens, stops, abort) for p in chunk]

            return self._fan_out(list(prompts), chat)
        as_ids = self.chat is not None  # a template rendered here: send exactly its tokens, no BOS added by the server
        items = [self.prompt_ids(p) for p in prompts] if as_ids else list(prompts)

        def complete(chunk: list[Any], abort: threading.Event) -> list[str]:
            body: dict[str, Any] = {
                "model": self.model,
                "prompt": chunk if len(chunk) > 1 or as_ids else chunk[0],
                "max_tokens": max_new_tokens,
                "temperature": 0,
            }
            if stops:
                body["stop"] = stops
            choices = self._choices(self.client.post(f"{self.url}/completions", body, abort), len(chunk))
            return [cut_at_stop(str(c.get("text") or ""), stops) for c in choices]

        return self._fan_out(items, complete)

    def _chat_request(self, prompt: str, max_new_tokens: int, stops: list[str], abort: threading.Event) -> str:
        """One chat request: the prompt as a conversation, its answer prefix continued where the server can."""
        messages, open_end = self.chat.messages(prompt)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens}
        body["temperature"] = 0
        if open_end:  # vLLM's default add_generation_prompt=true would refuse continue_final_message alone
            body |= {"add_generation_prompt": False, "continue_final_message": True}
        if stops:
            body["stop"] = stops[:4]  # OpenAI's limit; the rest are cut here
        choices = self.client.post(f"{self.url}/chat/completions", body, abort).get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise MmxError("the model server answered a chat request without choices", "is this a chat endpoint?")
        message = choices[0].get("message") or {}
        return cut_at_stop(str(message.get("content") or ""), stops)

    def loglikelihood_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Token-level log-likelihoods through `echo` + `logprobs`: the server scores our ids, we sum the tail."""
        if self.counts == "estimate":
            raise MmxError("log-likelihoods need the server's token ids", "pass --tokenizer DIR, or serve /tokenize")
        requests = []
        for context, continuation in pairs:
            context = list(context) or list(self.prefix_ids)
            if not context:
                raise MmxError(
                    "an empty context needs a BOS token, and the server's tokenizer adds none",
                    "give each pair some context",
                )
            whole = context + list(continuation)
            if self.max_context:  # the server counts one generated token too (max_tokens=1, as lm-eval sends)
                if len(continuation) >= self.max_context - 1:
                    raise MmxError(
                        f"a continuation of {len(continuation)} tokens does not fit the server model's context "
                        f"of {self.max_context}",
                        "score shorter continuations",
                    )
                whole = whole[-(self.max_context - 1) :]
            requests.append((whole, len(continuation)))

        def score(chunk: list[tuple[list[int], int]], abort: threading.Event) -> list[tuple[float, bool]]:
            body = {
                "model": self.model,
                "prompt": [ids for ids, _ in chunk],
                "max_tokens": 1,
                "temperature": 0,
                "echo": True,
                "logprobs": 1,
            }
            choices = self._choices(self.client.post(f"{self.url}/completions", body, abort), len(chunk))
            return [_tail_score(c, len(ids), n) for c, (ids, n) in zip(choices, chunk, strict=True)]

        return self._fan_out(requests, score)

    def auto_batch_size(self, length: int, max_new_tokens: int) -> int:
        """`--batch-size auto`: enough prompts per generate call to keep every concurrent request slot busy."""
        return self.concurrency * self.batch_size

    def describe(self) -> dict[str, Any]:
        """The server, the model it serves (with mmx's description when it is `mmx serve`), and the tokenizer."""
        return {
            "spec": self.spec,
            "name": self.model,
            "backend": "openai",
            "random_weights": bool(self.served.get("random_weights", False)),
            "url": self.url,
            "api_model": self.model,
            "api": self.api,
            "tokenizer": self.tokenizer.describe(),
            "token_counts": self.counts,
            "max_context": self.max_context,
            "chat_template": self.chat.describe() if self.chat is not None else None,
            "served": self.served or None,
            "device": self.served_device,
        }

    # --- internals -------------------------------------------------------------------------------------------------

    def _fan_out(self, items: list[Any], work: Callable[[list[Any], threading.Event], list[Any]]) -> list[Any]:
        """Run `work` on `batch_size` chunks with `concurrency` threads, in order; the first failure stops the rest."""
        chunks = [items[at : at + self.batch_size] for at in range(0, len(items), self.batch_size)]
        if not chunks:
            return []
        abort = threading.Event()
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
            futures = [pool.submit(work, chunk, abort) for chunk in chunks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                abort.set()
                for future in futures:
                    future.cancel()
                raise failed.exception()
        return [result for future in futures for result in future.result()]

    @staticmethod
    def _choices(data: dict[str, Any], expected: int) -> list[dict[str, Any]]:
        choices = data.get("choices")
        if not isinstance(choices, list) or len(choices) != expected or not all(isinstance(c, dict) for c in choices):
            raise MmxError(
                f"the model server answered with {len(choices) if isinstance(choices, list) else 'no'} choices "
                f"for {expected} prompts",
                "is this an OpenAI-compatible /v1/completions endpoint?",
            )
        return sorted(choices, key=lambda c: c.get("index", 0))


def _tail_score(choice: dict[str, Any], prompt_len: int, n: int) -> tuple[float, bool]:
    """Sum of the last `n` prompt-token log-probabilities in an echoed choice, and whether each was the top choice."""
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs")
    tops = logprobs.get("top_logprobs")
    if not isinstance(values, list) or not isinstance(tops, list) or len(values) < prompt_len:
        raise MmxError(
            "the model server did not return prompt log-probabilities",
            "the server must support `echo` with `logprobs` (mmx serve and vLLM do)",
        )
    span = values[prompt_len - n : prompt_len]
    if any(v is None for v in span):
        raise MmxError("the model server left a continuation token unscored", "give every pair a non-empty context")
    greedy = all(
        isinstance(top, dict) and top and value >= max(top.values())
        for value, top in zip(span, tops[prompt_len - n : prompt_len], strict=True)
    )
    return float(sum(span)), greedy


def _choose_api(option: str | None, chat_template: str | None, capabilities: Any) -> str:
    """`--api`, or for auto: what the server's model card says it serves (`mmx serve` says), else chat when the
    model's own chat format is asked for, else completions."""
    if option in ("completions", "chat"):
        return option
    caps = capabilities if isinstance(capabilities, dict) else {}
    if caps.get("completions") is False:
        return "chat"
    if chat_choice(chat_template) == "auto" and caps.get("chat", True):
        return "chat"
    return "completions"


def from_spec(rest: str, **options: Any) -> OpenAIBackend:
    """`openai:URL` with options model, tokenizer, api, chat_template, system_prompt, concurrency, batch_size,
    timeout, retries, backoff, max_context."""
    known = (
        "model",
        "tokenizer",
        "api",
        "chat_template",
        "system_prompt",
        "concurrency",
        "batch_size",
        "timeout",
        "retries",
        "backoff",
        "max_context",
    )
    options = check_options(options, known, "openai: models (the server places the model)")
    if not rest:
        raise MmxError("openai: needs the server's URL", "write openai:http://HOST:PORT/v1")
    return OpenAIBackend(rest, **options)


register_backend("openai", from_spec)
