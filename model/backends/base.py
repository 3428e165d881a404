"""The one declared interface every model under test implements, and the registry that turns a spec into one.

Spec strings: a preset name with shipped weights (the embedded default), `mmx:PATH` (a native checkpoint directory),
`random:PRESET[:SEED]` (random weights, for smoke tests and speed), `hf:PATH_OR_NAME`, `openai:URL`. Each prefix is
registered by the module that implements it, so `load_backend` stays ignorant of transformers, HTTP and the rest.

A backend must say how it generates (`generate`) and what it is (`describe`). Everything else has a default here,
written once: `loglikelihood` on top of `loglikelihood_tokens` (as lm-eval's `TemplateLM` does), `prompt_ids` and
`split_pair` on top of the tokenizer. The token-level methods (`generate_tokens`, `loglikelihood_tokens`,
`score_tokens`) are optional capabilities: a backend that has one overrides it, and `supports(name)` tells callers
(the server, the lm-eval adapter) which ones it has, instead of probing with `getattr`.

`prefill_scope(prompts)` announces the prompts of the `generate` calls that follow (a sweep cell): a backend that can
prefills the beginnings they share once, and says per call what it prefilled; the default does neither.

Prompts are text. A `Prompt` is text too (the user text joined with the start of the answer, so a text-completion
backend needs nothing new), but it also keeps the two apart: a backend with a chat format (`chat`, a `ChatTemplate`)
lays it out as a user turn followed by an assistant turn that begins with the answer prefix and is left open.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from mmx.errors import MmxError

TOKEN_METHODS = ("generate_tokens", "loglikelihood_tokens", "score_tokens")


@runtime_checkable
class Tokenizer(Protocol):
    """A backend's tokenizer: tasks use `encode`/`decode`, and a run records `describe()`."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def describe(self) -> dict[str, Any]: ...


class Prompt(str):
    """A prompt whose answer has begun: `user` (instruction and context) and `answer_prefix` (the first words of the
    reply). As a string it is the two joined, which is what a text-completion model continues; a chat backend puts
    `user` in the user turn and `answer_prefix` at the start of the assistant turn instead."""

    user: str
    answer_prefix: str

    def __new__(cls, user: str, answer_prefix: str = "") -> Prompt:
        self = super().__new__(cls, user + answer_prefix)
        self.user, self.answer_prefix = user, answer_prefix
        return self

    def __reduce__(self) -> tuple[type[Prompt], tuple[str, str]]:
        return (Prompt, (self.user, self.answer_prefix))

    def __repr__(self) -> str:
        return f"Prompt({self.user!r}, answer_prefix={self.answer_prefix!r})"


class TokenScore(NamedTuple):
    """One scored position: log P(token | prefix), whether it is the argmax, and the `top` best (id, logprob)."""

    logprob: float
    greedy: bool
    top: tuple[tuple[int, float], ...]


@dataclass
class PrefillLog:
    """What the latest `generate` call inside a `prefill_scope` prefilled. Per prompt, in the call's order: tokens its
    own forward passes computed (`prefilled`) and tokens read from a cache another prompt had filled (`read`; their
    sum is the prompt's length); `prefill_s`, the seconds until every prompt of the call was prefilled."""

    prefilled: list[int] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    prefill_s: float | None = None


class Backend(ABC):
    """A model under test. `generate` is greedy; `describe` is recorded in every run's `run.json`.

    `max_context` is the longest input + output in tokens (None: unknown, as for a server that does not say),
    `prefix_ids` the ids the model reads before a text prompt (usually BOS), and `chat` the chat format a `Prompt` is
    laid out in (None: prompts are plain text).
    """

    tokenizer: Tokenizer
    max_context: int | None
    prefix_ids: list[int]
    chat: Any = None  # a mmx.model.backends.chat.ChatTemplate when prompts are laid out as a conversation
    vocab_size: int | None = None  # token ids the model embeds (None: unknown, as for a server)

    @abstractmethod
    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        """Greedy continuations of `prompts`, each cut before the first stop string (or end of text)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Enough to reproduce the model: spec, name, weights, tokenizer, dtype, device."""

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): the continuation's summed log-probability and whether it is greedy."""
        return self.loglikelihood_tokens([self.split_pair(context, cont) for context, cont in pairs])

    def prompt_ids(self, prompt: str) -> list[int]:
        """The token ids the model reads for `prompt`: a `Prompt` through the chat format when there is one, any other
        text after the backend's prefix (BOS)."""
        if isinstance(prompt, Prompt) and self.chat is not None:
            messages, open_end = self.chat.messages(prompt)
            return self.chat_ids(messages, continue_final=open_end)
        return list(self.prefix_ids) + self.tokenizer.encode(prompt)

    def prompt_length(self, prompt: str) -> int:
        """How many tokens the model reads for `prompt` (a backend that cannot list them may count them)."""
        return len(self.prompt_ids(prompt))

    def chat_ids(
        self,
        messages: list[dict[str, str]],
        *,
        continue_final: bool = False,
        add_generation_prompt: bool | None = None,
    ) -> list[int]:
        """The token ids of a conversation laid out by the chat template: the template decides about BOS, as
        `transformers` and vLLM do. `continue_final` leaves the last message open (no end of turn after it);
        otherwise a new assistant turn is opened unless `add_generation_prompt` is False."""
        return self.tokenizer.encode(self._render_chat(messages, continue_final, add_generation_prompt))

    def chat_text(
        self,
        messages: list[dict[str, str]],
        *,
        continue_final: bool = False,
        add_generation_prompt: bool | None = None,
    ) -> str:
        """A conversation as text for `generate`, which puts `prefix_ids` first: a leading BOS the template writes is
        left out, so the model reads it once."""
        text = self._render_chat(messages, continue_final, add_generation_prompt)
        bos = self.chat.bos_token
        if self.prefix_ids and bos and text.startswith(bos):
            text = text[len(bos) :]
        return text

    def _render_chat(
        self, messages: list[dict[str, str]], continue_final: bool, add_generation_prompt: bool | None = None
    ) -> str:
        if self.chat is None:
            raise MmxError("this model has no chat template", "pass --chat-template auto (the model's own) or FILE")
        return self.chat.render(messages, continue_final=continue_final, add_generation_prompt=add_generation_prompt)

    def split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of a (context, continuation) pair the way lm-eval splits them: trailing spaces of the context go
        to the continuation, and the continuation is the tail of the joint encoding (so merges across the seam
        count)."""
        stripped = context.rstrip()
        continuation, context = context[len(stripped) :] + continuation, stripped
        whole = self.tokenizer.encode(context + continuation)
        head = self.tokenizer.encode(context)
        return list(self.prefix_ids) + head, whole[len(head) :]

    def auto_batch_size(self, length: int, max_new_tokens: int) -> int:
        """`--batch-size auto`: prompts of `length` tokens per `generate` call; one unless the backend knows better."""
        return 1

    def prefill_scope(self, prompts: list[str], reuse: bool = True) -> AbstractContextManager[PrefillLog | None]:
        """A context for `generate` calls over `prompts` (all of them, best in the order they will come). Inside, a
        backend that can computes the beginnings the prompts share only once when `reuse` is on, and never when it
        is off; the log it yields says what each call prefilled (None: this backend cannot tell, the default)."""
        return nullcontext(None)

    # --- optional token-level capabilities (see `supports`) ------------------------------------------------------

    def generate_tokens(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str] | None = None, *, hook: Any = None
    ) -> list[list[int]]:
        """Greedy new token ids for token-id prompts taken as the model's whole input. `hook` (a
        `mmx.model.generate.GenerationHook`) hears each token as it is chosen and may cancel between steps."""
        raise self._lacks("generate from token ids")

    def loglikelihood_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Token-level log-likelihoods of (context ids, continuation ids) pairs."""
        raise self._lacks("score token ids")

    def score_tokens(self, sequences: list[list[int]], top_k: int = 1, start: int = 1) -> list[list[TokenScore]]:
        """Per-position scores of each sequence from position `start` on, with the `top_k` best alternatives."""
        raise self._lacks("score positions")

    def _lacks(self, what: str) -> MmxError:
        """The one-line error for a caller that used an optional capability without asking `supports` first."""
        return MmxError(f"{type(self).__name__} cannot {what}", "use a native (mmx-mini, mmx:, random:) or hf: model")

    def supports(self, method: str) -> bool:
        """Whether this backend implements the optional token-level `method` (one of `TOKEN_METHODS`)."""
        if method not in TOKEN_METHODS:
            raise ValueError(f"{method!r} is not an optional backend method")
        return getattr(type(self), method) is not getattr(Backend, method)


BackendFactory = Callable[..., Backend]
_FACTORIES: dict[str, BackendFactory] = {}
_LOADERS: dict[str, str] = {}  # prefix -> module that registers it when imported


def register_backend(prefix: str, factory: BackendFactory) -> None:
    """Make `prefix:REST` specs build a backend with `factory(REST, **options)`."""
    _FACTORIES[prefix] = factory


def register_lazy(prefix: str, module: str) -> None:
    """Name the module that registers `prefix`, imported only when such a spec is used (keeps imports light)."""
    _LOADERS[prefix] = module


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend a spec string names; bad specs are one clear MmxError."""
    prefix, sep, rest = spec.partition(":")
    if not sep or (len(prefix) == 1 and rest.startswith("\\")):  # a bare name (or a Windows drive path)
        prefix, rest = "name", spec
    if prefix not in _FACTORIES and prefix in _LOADERS:
        importlib.import_module(_LOADERS[prefix])
    if prefix not in _FACTORIES:
        known = ", ".join(sorted({*_FACTORIES, *_LOADERS} - {"name"}))
        raise MmxError(f"unknown model spec {spec!r}", f"use a preset name or one of the prefixes {known}")
    return _FACTORIES[prefix](rest, **options)


register_lazy("name", "mmx.model.backends.native")
register_lazy("mmx", "mmx.model.backends.native")
register_lazy("random", "mmx.model.backends.native")
register_lazy("hf", "mmx.model.backends.hf")
register_lazy("openai", "mmx.model.backends.openai")
