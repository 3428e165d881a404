"""Chat formats: how a backend lays out a `Prompt` as a conversation, and what a run records about it.

A prompt becomes an optional system turn, a user turn holding the instruction and context, and an assistant turn that
begins with the answer prefix and is left open (no end of turn after it) — RULER's layout, and what transformers and
vLLM call `continue_final_message`. A prompt without an answer prefix opens an empty assistant turn instead
(`add_generation_prompt`). Servers that cannot continue an assistant turn get the prefix as the last line of the user
turn (`prefill="user_line"`), and the run records which of the two it was.

Templates render with transformers' own `apply_chat_template` where a Hugging Face tokenizer is at hand, so a prompt
reads exactly as it would in transformers or vLLM; otherwise (native checkpoints, a server's tokenizer) with a Jinja
environment set up the way transformers sets up its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from mmx.errors import MmxError

AUTO = ("auto", "default", "tokenizer", "true")
OFF = ("none", "false", "")
IF_PRESENT = "auto-if-present"  # the model's own template when it has one, else plain text (what `mmx serve` uses)
PREFILL_MODES = ("assistant", "user_line")
# transformers' marker for `continue_final_message`: appended to the last message, rendered, cut off again
_OPEN_END = "CONTINUE_FINAL_MESSAGE_TAG "

Renderer = Callable[[list[dict[str, str]], bool, bool], str]  # (messages, add_generation_prompt, continue_final)


def chat_choice(option: str | bool | None) -> str | None:
    """`--chat-template` as given -> None (plain text), "auto" (the model's own template) or a file path."""
    if option is None or option is False or str(option).strip().lower() in OFF:
        return None
    if option is True or str(option).strip().lower() in AUTO:
        return "auto"
    if str(option).strip().lower() == IF_PRESENT:
        return IF_PRESENT
    return str(option)


def read_template_file(option: str) -> str:
    """The Jinja source of a `--chat-template FILE`."""
    path = Path(option).expanduser()
    if not path.is_file():
        raise MmxError(f"chat template {path} not found", "pass a Jinja file, or auto for the model's own template")
    return path.read_text(encoding="utf-8")


def checkpoint_template(directory: Path | None) -> str | None:
    """A checkpoint directory's own chat template, where Hugging Face keeps it: `chat_template.jinja`, else the
    `chat_template` of `tokenizer_config.json` (the default one when it names several)."""
    if directory is None:
        return None
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(value, list):  # [{"name": ..., "template": ...}, ...]
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) and value.strip() else None


def hf_renderer(tok: Any, template: str) -> Renderer:
    """Render with transformers' `apply_chat_template` on tokenizer `tok`, so the special tokens and the cut after
    an open final message are exactly transformers'."""

    def render(messages: list[dict[str, str]], add_generation_prompt: bool, continue_final: bool) -> str:
        return tok.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final,
        )

    return render


def jinja_renderer(template: str, special_tokens: dict[str, str | None]) -> Renderer:
    """Render with a sandboxed Jinja environment configured as transformers configures its own (trimmed blocks,
    `tojson`, `raise_exception`, `strftime_now`), for tokenizers that are not transformers tokenizers."""
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, **_: Any):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    compiled = env.from_string(template)
    tokens = {key: value or "" for key, value in special_tokens.items()}

    def render(messages: list[dict[str, str]], add_generation_prompt: bool, continue_final: bool) -> str:
        if not continue_final:
            return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)
        last = messages[-1]
        marked = [*messages[:-1], {**last, "content": last["content"] + _OPEN_END}]
        text = compiled.render(messages=marked, add_generation_prompt=False, **tokens)
        if _OPEN_END in text:
            return text[: text.rindex(_OPEN_END)]
        if _OPEN_END.rstrip() in text:  # the template stripped the trailing space
            return text[: text.rindex(_OPEN_END.rstrip())].rstrip()
        raise TemplateError("the chat template does not write the final message's content as given")

    return render


class ChatTemplate:
    """A chat format: the template (and where it came from), an optional system prompt, how the answer prefix is
    placed (`prefill`), and the text of BOS as the template writes it. `render` is None when the server renders
    (an `openai:` backend speaking the chat API): then only `messages` and `describe` apply."""

    def __init__(
        self,
        *,
        source: str,
        template: str | None,
        renderer: Renderer | None,
        system: str | None = None,
        prefill: str = "assistant",
        bos_token: str | None = None,
    ) -> None:
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {PREFILL_MODES}")
        self.source, self.template, self.renderer = source, template, renderer
        self.system, self.prefill, self.bos_token = system, prefill, bos_token

    @property
    def renders_locally(self) -> bool:
        return self.renderer is not None

    def messages(self, prompt: str) -> tuple[list[dict[str, str]], bool]:
        """The conversation for `prompt` and whether its last message is left open (the answer has begun)."""
        user = getattr(prompt, "user", str(prompt))
        prefix = getattr(prompt, "answer_prefix", "").lstrip()
        turns = [{"role": "system", "content": self.system}] if self.system else []
        if prefix.strip() and self.prefill == "assistant":
            return [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": prefix}], True
        if prefix.strip():  # the server cannot continue an assistant turn: the prefix closes the question instead
            user = f"{user.rstrip()}\n{prefix.strip()}"
        return [*turns, {"role": "user", "content": user}], False

    def render(
        self,
        messages: list[dict[str, str]],
        *,
        continue_final: bool = False,
        add_generation_prompt: bool | None = None,
    ) -> str:
        """The conversation as the model reads it: `continue_final` leaves the last message open; otherwise an
        assistant turn is opened unless `add_generation_prompt` is False."""
        from jinja2 import TemplateError

        if self.renderer is None:
            raise MmxError(
                "the server applies this model's chat template, so it cannot be rendered here",
                "pass --tokenizer DIR (the model's Hugging Face tokenizer) to render it locally",
            )
        if not messages:
            raise MmxError("a conversation needs at least one message", "send one or more messages")
        try:
            opens = not continue_final if add_generation_prompt is None else add_generation_prompt
            return self.renderer(messages, opens and not continue_final, continue_final)
        except (TemplateError, ValueError, TypeError, KeyError) as err:
            raise MmxError(f"the chat template refused the conversation: {err}", _template_hint(messages)) from None

    def describe(self) -> dict[str, Any]:
        """What a run records: the template's source and digest, the system prompt, and where the prefix went."""
        digest = hashlib.sha256(self.template.encode()).hexdigest()[:16] if self.template else None
        return {"source": self.source, "sha256": digest, "system_prompt": self.system, "answer_prefix": self.prefill}


def _template_hint(messages: list[dict[str, str]]) -> str:
    if any(m.get("role") == "system" for m in messages):
        return "this template may not take a system prompt: drop --system-prompt"
    return "check the template, or pass --chat-template FILE"


def build_chat(
    option: str | bool | None,
    *,
    own: str | None,
    renderer: Callable[[str], Renderer] | None,
    system: str | None,
    bos_token: str | None,
    where: str,
) -> ChatTemplate | None:
    """The chat format `--chat-template` asks for: None for plain text, the model's own template (`own`) for auto
    (`auto-if-present`: only if it has one), or a Jinja file; `renderer` makes a renderer from template source. A
    system prompt needs a chat format."""
    choice = chat_choice(option)
    if choice == IF_PRESENT:
        choice = "auto" if own else None
    if choice is None:
        if system:
            raise MmxError("--system-prompt needs a chat format", "add --chat-template auto (or FILE)")
        return None
    if choice == "auto":
        if not own:
            raise MmxError(f"{where} has no chat template", "pass --chat-template FILE with a Jinja template")
        template, source = own, "model"
    else:
        template, source = read_template_file(choice), str(Path(choice).expanduser())
    return ChatTemplate(
        source=source,
        template=template,
        renderer=renderer(template) if renderer is not None else None,
        system=system,
        bos_token=bos_token,
    )
