"""What `mmx serve` does with a request, apart from HTTP: check it, lay out the prompt ids, generate on the model's
thread, and shape OpenAI's responses and stream chunks.

Text prompts to `/v1/completions` are read as plain text (after the backend's BOS); conversations to
`/v1/chat/completions` go through the backend's chat template, continuing the last message when asked
(`continue_final_message`). `usage` counts the ids the model read and the tokens it generated. With token-level
methods (`generate_tokens`, `score_tokens`) answers stream token by token and carry log-probabilities; a backend
without them answers in one piece and refuses `logprobs`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Event
from typing import Any

from mmx.errors import MmxError
from mmx.model.backends.common import cut_at_stop
from mmx.model.generate import GenerationHook
from mmx.workflows.serve.protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    Sampling,
    chat_request,
    completion_request,
    token_list,
    tokenize_request,
)
from mmx.workflows.serve.worker import DEFAULT_MAX_QUEUE, ModelWorker

DEFAULT_MAX_TOKENS_CAP = 16384  # new tokens one request may ask for


@dataclass
class Plan:
    """A checked request: the ids the model reads per choice, what `echo` repeats, and the sampling settings."""

    chat: bool
    ids: list[list[int]]
    echoes: list[str]
    texts: list[str]  # the prompts as text, for backends that only generate from text
    sampling: Sampling
    max_tokens: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Choice:
    """One answer: its text (cut at a stop string), the tokens the model generated, why it ended, log-probabilities."""

    text: str
    tokens: int  # tokens the model generated
    finish_reason: str
    logprobs: dict[str, Any] | None = None


class ModelService:
    """The served backend behind OpenAI's endpoints, one model call at a time (`worker`)."""

    def __init__(
        self,
        backend: Any,
        model_name: str,
        *,
        max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.backend = backend
        self.model_name = model_name
        self.description = backend.describe()
        self.cap = max_tokens_cap
        self.worker = ModelWorker(max_queue)
        self.created = int(time.time())
        self.vocab_size: int | None = getattr(backend, "vocab_size", None)

    # --- small endpoints ---------------------------------------------------------------------------------------------

    @property
    def has_chat(self) -> bool:
        chat = self.backend.chat
        return chat is not None and chat.renders_locally

    def models(self) -> dict[str, Any]:
        """`/v1/models`: the one served model, its context length, the APIs it answers, and mmx's description."""
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "mmx",
            "root": self.description.get("spec"),
            "max_model_len": self.backend.max_context,
            "capabilities": {"completions": True, "chat": self.has_chat},
            "mmx": self.description,
        }
        return {"object": "list", "data": [card]}

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's `/tokenize`: a prompt's ids (with the backend's prefix unless `add_special_tokens` is false), or a
        conversation's ids through the chat template."""
        self.check_model(body)
        prompt, messages, options = tokenize_request(body)
        if messages is not None:
            ids = self._chat_ids(messages, **options)
        else:
            ids = self.backend.tokenizer.encode(prompt)
            if options["add_special_tokens"]:
                ids = list(self.backend.prefix_ids) + ids
        return {"tokens": ids, "count": len(ids), "max_model_len": self.backend.max_context}

    def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's `/detokenize`: the text of a list of ids."""
        self.check_model(body)
        ids = token_list(body.get("tokens"), "tokens")
        self._check_vocabulary([ids])
        return {"prompt": self.backend.tokenizer.decode(ids)}

    def tokenizer_info(self) -> dict[str, Any]:
        """`/tokenizer_info` (lm-eval's remote tokenizer probes it): special tokens, context length, chat template."""
        tok, chat = self.backend.tokenizer, self.backend.chat
        return {
            "tokenizer_class": type(tok).__name__,
            "eos_token": getattr(tok, "eos_token", None),
            "bos_token": getattr(tok, "bos_token", None),
            "pad_token": getattr(tok, "pad_token", None),
            "model_max_length": self.backend.max_context,
            "chat_template": chat.template if chat is not None else None,
        }

    # --- planning (any thread) ---------------------------------------------------------------------------------------

    def plan_completion(self, body: dict[str, Any]) -> Plan:
        """A `/v1/completions` request checked and laid out: token-id prompts verbatim, text after the prefix."""
        self.check_model(body)
        request: CompletionRequest = completion_request(body, self.cap)
        tok = self.backend.tokenizer
        ids = [self.backend.prompt_ids(p) if isinstance(p, str) else p for p in request.prompts]
        self._check_vocabulary([p for p in request.prompts if not isinstance(p, str)])
        texts = [p if isinstance(p, str) else tok.decode(p) for p in request.prompts]
        max_tokens = self._budget(ids, request.sampling.max_tokens)
        self._check_logprobs(request.sampling)
        return Plan(False, ids, texts, texts, request.sampling, max_tokens)

    def plan_chat(self, body: dict[str, Any]) -> Plan:
        """A `/v1/chat/completions` request checked and laid out by the chat template."""
        self.check_model(body)
        request: ChatRequest = chat_request(body, self.cap)
        options = {"continue_final": request.continue_final, "add_generation_prompt": request.add_generation_prompt}
        ids = self._chat_ids(request.messages, **options)
        text = self.backend.chat_text(request.messages, **options)
        # vLLM's echo: the reply repeats the last message when it is in the role the reply continues
        role = "assistant" if request.add_generation_prompt else request.messages[-1]["role"]
        echo = request.messages[-1]["content"] if request.messages[-1]["role"] == role else ""
        max_tokens = self._budget([ids], request.sampling.max_tokens)
        self._check_logprobs(request.sampling)
        return Plan(True, [ids], [echo], [text], request.sampling, max_tokens)

    def check_model(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        if name not in (None, "", self.model_name):
            raise ApiError(
                404,
                f"The model `{name}` does not exist; this server serves `{self.model_name}`",
                kind="not_found_error",
                code="model_not_found",
                param="model",
            )

    def _chat_ids(self, messages: list[dict[str, str]], *, continue_final: bool, add_generation_prompt: bool):
        if not self.has_chat:
            raise ApiError(
                400,
                f"{self.model_name} has no chat template, so it takes no conversations",
                code="chat_template_missing",
                param="messages",
            )
        try:
            return self.backend.chat_ids(
                messages, continue_final=continue_final, add_generation_prompt=add_generation_prompt
            )
        except MmxError as err:
            raise ApiError(400, str(err), param="messages") from None

    def _budget(self, ids: list[list[int]], asked: int | None) -> int:
        """New tokens to generate: as asked, or for chat without a limit the rest of the context (within the cap);
        a prompt that does not leave room is refused the way OpenAI and vLLM refuse it."""
        limit = self.backend.max_context
        longest = max(len(p) for p in ids)
        budget = asked if asked is not None else min(self.cap, limit - longest) if limit else self.cap
        if limit and longest + max(budget, 1 if asked is None else 0) > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{longest + budget} tokens ({longest} in the prompt, {budget} in the completion). "
                "Please reduce the prompt or the completion length.",
                code="context_length_exceeded",
            )
        return budget

    def _check_vocabulary(self, prompts: list[list[int]]) -> None:
        if self.vocab_size is None:
            return
        for ids in prompts:
            bad = next((i for i in ids if i >= self.vocab_size), None)
            if bad is not None:
                raise ApiError(
                    400,
                    f"token id {bad} is outside the vocabulary (ids 0 to {self.vocab_size - 1})",
                    code="invalid_token_id",
                )

    def _check_logprobs(self, sampling: Sampling) -> None:
        if sampling.logprobs is not None and not self.backend.supports("score_tokens"):
            message = f"{self.model_name} does not report token log-probabilities"
            raise ApiError(400, message, code="logprobs_unsupported")

    # --- generation (the model's thread) -----------------------------------------------------------------------------

    def run(self, plan: Plan, cancel: Event, on_token: Callable[[int, int], None] | None = None) -> list[Choice]:
        """Generate every choice of `plan`; `on_token(choice, id)` hears tokens as they come, `cancel` stops it."""
        backend, tok, stops = self.backend, self.backend.tokenizer, plan.sampling.stop
        texts: list[str | None] = [None] * len(plan.ids)
        if plan.max_tokens == 0:
            generated: list[list[int]] = [[] for _ in plan.ids]
        elif backend.supports("generate_tokens"):
            hook = GenerationHook(on_token, cancel.is_set)
            generated = backend.generate_tokens(plan.ids, plan.max_tokens, stops or None, hook=hook)
        else:  # text only: the answer arrives in one piece, its tokens are the re-encoded text's (within the budget)
            texts = list(backend.generate(plan.texts, plan.max_tokens, stops or None))
            generated = [tok.encode(text)[: plan.max_tokens] for text in texts]
        choices = []
        for prompt_ids, new, given in zip(plan.ids, generated, texts, strict=True):
            full = tok.decode(new) if given is None else given
            text = cut_at_stop(full, stops)
            cut = len(text) < len(full)
            kept = new if not cut else _tokens_within(tok, new, len(text))
            finish = "length" if len(new) >= plan.max_tokens and not cut else "stop"
            choice = Choice(text, len(new), finish)
            if plan.sampling.logprobs is not None:
                choice.logprobs = self._logprobs(plan, prompt_ids, kept)
            choices.append(choice)
        return choices

    def _logprobs(self, plan: Plan, prompt_ids: list[int], new_ids: list[int]) -> dict[str, Any]:
        """OpenAI's logprobs object: per generated token for chat; for completions per shown token (the prompt too
        with `echo`, its first token without a score)."""
        k = plan.sampling.logprobs or 0
        echo = plan.sampling.echo and not plan.chat
        sequence = prompt_ids + new_ids
        start = 1 if echo else len(prompt_ids)
        shown = sequence if echo else new_ids
        scores = self.backend.score_tokens([sequence], top_k=k, start=start)[0] if len(sequence) > start else []
        scored = sequence[len(sequence) - len(scores) :]
        if plan.chat:
            return {"content": [self._chat_logprob(t, s, k) for t, s in zip(scored, scores, strict=True)]}
        decode = self.backend.tokenizer.decode
        token_logprobs: list[float | None] = [None] * (len(shown) - len(scores))
        top_logprobs: list[dict[str, float] | None] = [None] * (len(shown) - len(scores))
        for token, score in zip(scored, scores, strict=True):
            token_logprobs.append(score.logprob)
            best: dict[str, float] = {}
            for candidate, value in [*score.top, (token, score.logprob)]:  # the chosen token is listed too, as vLLM
                best.setdefault(decode([candidate]), value)
            top_logprobs.append(best)
        pieces = [decode([t]) for t in shown]
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

    def _chat_logprob(self, token: int, score: Any, k: int) -> dict[str, Any]:
        decode = self.backend.tokenizer.decode

        def entry(token_id: int, value: float) -> dict[str, Any]:
            text = decode([token_id])
            return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

        return {**entry(token, score.logprob), "top_logprobs": [entry(t, v) for t, v in score.top[:k]]}

    # --- responses ---------------------------------------------------------------------------------------------------

    def usage(self, plan: Plan, choices: list[Choice]) -> dict[str, int]:
        prompt = sum(len(ids) for ids in plan.ids)
        completion = sum(c.tokens for c in choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def response(self, plan: Plan, choices: list[Choice]) -> dict[str, Any]:
        """The whole (non-streamed) answer."""
        body = self._envelope(plan, stream=False)
        if plan.chat:
            content = (plan.echoes[0] if plan.sampling.echo else "") + choices[0].text
            body["choices"] = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": choices[0].logprobs,
                    "finish_reason": choices[0].finish_reason,
                }
            ]
        else:
            body["choices"] = [
                {
                    "index": i,
                    "text": (plan.echoes[i] if plan.sampling.echo else "") + c.text,
                    "logprobs": c.logprobs,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ]
        body["usage"] = self.usage(plan, choices)
        return body

    def opening_chunks(self, plan: Plan) -> list[dict[str, Any]]:
        """What a stream starts with: the assistant role for chat, the echoed prompt if asked."""
        if plan.chat:
            head = (plan.echoes[0] if plan.sampling.echo else "") or ""
            return [self.chunk(plan, 0, head, role=True)]
        return [self.chunk(plan, i, echo) for i, echo in enumerate(plan.echoes) if plan.sampling.echo and echo]

    def chunk(
        self,
        plan: Plan,
        index: int,
        text: str,
        *,
        finish: str | None = None,
        logprobs: Any = None,
        role: bool = False,
    ) -> dict[str, Any]:
        """One stream chunk for choice `index`."""
        body = self._envelope(plan, stream=True)
        if plan.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if role else {}
            if text and not role:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        body["choices"] = [choice]
        return body

    def usage_chunk(self, plan: Plan, choices: list[Choice]) -> dict[str, Any]:
        """The last chunk when `stream_options.include_usage`: no choices, the request's usage."""
        return {**self._envelope(plan, stream=True), "choices": [], "usage": self.usage(plan, choices)}

    def _envelope(self, plan: Plan, *, stream: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if plan.chat else "text_completion"
        prefix = "chatcmpl" if plan.chat else "cmpl"
        return {"id": f"{prefix}-{plan.id}", "object": kind, "created": plan.created, "model": self.model_name}


def _tokens_within(tok: Any, ids: list[int], chars: int) -> list[int]:
    """The longest prefix of `ids` whose text fits in `chars` characters (the tokens before a stop string)."""
    for count in range(1, len(ids) + 1):
        if len(tok.decode(ids[:count])) > chars:
            return ids[: count - 1]
    return ids
