"""The OpenAI request bodies `mmx serve` takes, checked field by field: whatever shape a client sends, the answer is
either a parsed request or an `ApiError` (a 4xx in OpenAI's error shape), never a server error.

Field names and defaults follow OpenAI's API and, for what OpenAI lacks, vLLM's: `echo` on chat, the
`add_generation_prompt` / `continue_final_message` pair that continues an assistant message, and the `/tokenize`
bodies. Decoding is always greedy: sampling fields (`temperature`, `top_p`, `seed`, …) are accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_LOGPROBS = 20
MAX_STOPS = 16
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    """A request the server refuses, sent back as OpenAI's error object with this HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Sampling:
    """What every generation request shares: the answer budget, stop strings, streaming and log-probabilities."""

    max_tokens: int | None  # None: the rest of the model's context, within the server's cap
    stop: list[str]
    stream: bool
    include_usage: bool
    logprobs: int | None  # top alternatives per token; None: no log-probabilities
    echo: bool


@dataclass
class CompletionRequest:
    prompts: list[str | list[int]]
    sampling: Sampling


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    add_generation_prompt: bool
    continue_final: bool
    sampling: Sampling
    extra: dict[str, Any] = field(default_factory=dict)


def completion_request(body: dict[str, Any], cap: int) -> CompletionRequest:
    """`/v1/completions`: OpenAI's four prompt shapes, `max_tokens` (default 16), `logprobs` 0..20, `echo`."""
    prompts = _prompts(body.get("prompt"))
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)):
        raise ApiError(400, "`logprobs` must be an integer or null", param="logprobs")
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise ApiError(400, f"`logprobs` must be between 0 and {MAX_LOGPROBS}", param="logprobs")
    sampling = _sampling(body, cap, int_or(body, "max_tokens", DEFAULT_COMPLETION_TOKENS, low=0), logprobs)
    return CompletionRequest(prompts, sampling)


def chat_request(body: dict[str, Any], cap: int) -> ChatRequest:
    """`/v1/chat/completions`: messages, `max_tokens` or `max_completion_tokens` (default: the rest of the context,
    within the server's cap), `logprobs` + `top_logprobs`, and vLLM's prefill pair."""
    messages = _messages(body.get("messages"))
    if body.get("chat_template") is not None:
        raise ApiError(400, "this server does not take a chat template per request", param="chat_template")
    for key in ("tools", "functions", "response_format"):
        if body.get(key) not in (None, [], {}):
            raise ApiError(400, f"`{key}` is not supported by this server", param=key)
    continue_final = flag(body, "continue_final_message", False)
    add_generation_prompt = flag(body, "add_generation_prompt", not continue_final)
    if continue_final and add_generation_prompt:
        raise ApiError(400, "`continue_final_message` and `add_generation_prompt` cannot both be true")
    if continue_final and not messages[-1]["content"]:
        raise ApiError(400, "`continue_final_message` needs a final message with content")
    wants_logprobs = flag(body, "logprobs", False)
    top = int_or(body, "top_logprobs", 0, low=0)
    if top > MAX_LOGPROBS:
        raise ApiError(400, f"`top_logprobs` must be between 0 and {MAX_LOGPROBS}", param="top_logprobs")
    if top and not wants_logprobs:
        raise ApiError(400, "`top_logprobs` needs `logprobs: true`", param="top_logprobs")
    budget = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = None if budget is None else int_or({"max_tokens": budget}, "max_tokens", 0, low=0)
    sampling = _sampling(body, cap, max_tokens, top if wants_logprobs else None)
    return ChatRequest(messages, add_generation_prompt, continue_final, sampling)


def tokenize_request(body: dict[str, Any]) -> tuple[str | None, list[dict[str, str]] | None, dict[str, bool]]:
    """vLLM's `/tokenize`: a `prompt` (special tokens added by default) or `messages` (the template decides)."""
    has_prompt, has_messages = "prompt" in body, "messages" in body
    if has_prompt == has_messages:
        raise ApiError(400, "send exactly one of `prompt` and `messages`")
    if has_prompt:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "`prompt` must be a string", param="prompt")
        return prompt, None, {"add_special_tokens": flag(body, "add_special_tokens", True)}
    continue_final = flag(body, "continue_final_message", False)
    add_generation_prompt = flag(body, "add_generation_prompt", not continue_final)
    if continue_final and add_generation_prompt:
        raise ApiError(400, "`continue_final_message` and `add_generation_prompt` cannot both be true")
    options = {"continue_final": continue_final, "add_generation_prompt": add_generation_prompt}
    return None, _messages(body.get("messages")), options


def token_list(value: Any, key: str) -> list[int]:
    """A non-empty list of non-negative integer token ids."""
    if not is_ids(value) or not value:
        raise ApiError(400, f"`{key}` must be a non-empty list of token ids", param=key)
    return list(value)


def _sampling(body: dict[str, Any], cap: int, max_tokens: int | None, logprobs: int | None) -> Sampling:
    if max_tokens is not None and max_tokens > cap:
        raise ApiError(
            400,
            f"`max_tokens` {max_tokens} is over this server's limit of {cap} new tokens per request",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    if int_or(body, "n", 1, low=1) != 1 or int_or(body, "best_of", 1, low=1) != 1:
        raise ApiError(400, "only n=1 is supported: decoding is greedy", param="n")
    stream = flag(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "`stream_options` must be an object", param="stream_options")
    if options and not stream:
        raise ApiError(400, "`stream_options` needs `stream: true`", param="stream_options")
    include_usage = flag(options or {}, "include_usage", False)
    return Sampling(max_tokens, _stops(body.get("stop")), stream, include_usage, logprobs, flag(body, "echo", False))


def _prompts(value: Any) -> list[str | list[int]]:
    """OpenAI's four prompt shapes (text, list of texts, token ids, list of token-id lists) as a list of prompts."""
    if isinstance(value, str):
        return [value]
    if is_ids(value) and value:
        return [list(value)]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return list(value)
    if isinstance(value, list) and value and all(is_ids(p) and p for p in value):
        return [list(p) for p in value]
    raise ApiError(
        400, "`prompt` must be a string, a list of strings, a list of token ids, or a list of those", param="prompt"
    )


def _messages(value: Any) -> list[dict[str, str]]:
    """Chat messages as {role, content} with text content (OpenAI's list of text parts is joined)."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, "`messages` must be a non-empty list of {role, content} objects", param="messages")
    messages = []
    for at, message in enumerate(value):
        if not isinstance(message, dict):
            raise ApiError(400, f"`messages[{at}]` must be an object with `role` and `content`", param="messages")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise ApiError(400, f"`messages[{at}].role` must be one of {', '.join(CHAT_ROLES)}", param="messages")
        messages.append({"role": role, "content": _text_content(content, at)})
    return messages


def _text_content(content: Any, at: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "".join(part["text"] for part in content)
    raise ApiError(400, f"`messages[{at}].content` must be text (a string or a list of text parts)", param="messages")


def is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= MAX_STOPS:
        return [s for s in value if s]
    raise ApiError(400, f"`stop` must be a string, a list of at most {MAX_STOPS} strings, or null", param="stop")


def int_or(body: dict[str, Any], key: str, default: int, *, low: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ApiError(400, f"`{key}` must be an integer >= {low}", param=key)
    return value


def flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"`{key}` must be true or false", param=key)
    return value
