"""Any mmx Backend as an lm-evaluation-harness model, registered with lm-eval under the name `mmx`.

`mmx eval lm-eval` uses it directly. lm-eval's own CLI finds `--model mmx` through `mmx-lm-eval`, which registers it
and then runs lm-eval's CLI with the same arguments (lm-eval offers plugins no hook of their own). From Python,
`import mmx.workflows.lm_eval.adapter` and then `lm_eval.simple_evaluate(model="mmx",
model_args="model=hf:/path/to/model", tasks=[...])`. lm-eval's built-in models are loaded before `mmx` is registered:
lm-eval loads them only into an empty registry, so registering first would hide them.

With `--apply_chat_template` lm-eval asks the model to lay out its conversations (`apply_chat_template`): the backend's
chat template renders them, a task's answer prefix (`gen_prefix`) continuing the assistant turn.

Every answer the backend gives is appended to a response log (one JSON line each, flushed as written) when one is
configured, so a run that dies halfway (a killed server, Ctrl-C) reruns only the requests that had no answer yet.
Decoding is greedy whatever a task asks; lm-eval's sampling settings are ignored with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401 (the built-in models, before ours: see the module docstring)
from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry

from mmx.errors import MmxError
from mmx.results.store import read_jsonl

DEFAULT_CHUNK = 64  # requests per backend call: enough to fill its batches, few enough that the log and bar move
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default answer budget when a task names none
# Rolling windows leave room for the start token the backend puts before a text, and for the one token an
# OpenAI-style server generates along with an echoed prompt.
_WINDOW_HEADROOM = 2

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (request kind, answered, total)


class ResponseLog:
    """Answers by request, kept in a JSONL file: lookups before asking the model, appends right after."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.answers: dict[str, Any] = {
            r["key"]: r["value"] for r in read_jsonl(self.path) if isinstance(r.get("key"), str) and "value" in r
        }

    @staticmethod
    def key(kind: str, args: Sequence[Any]) -> str:
        """A stable fingerprint of one request (kind and arguments, generation settings included)."""
        text = json.dumps([kind, list(args)], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def add(self, records: list[tuple[str, Any]]) -> None:
        """Append (key, answer) pairs and flush them to disk before returning."""
        lines = []
        for key, value in records:
            self.answers[key] = value
            lines.append(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
        with self.path.open("a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a torn line from a killed process must not swallow the next answer
                    lines.insert(0, "\n")
            fh.write("".join(lines).encode())
            fh.flush()
            os.fsync(fh.fileno())


def rolling_windows(ids: list[int], width: int | None) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs that predict every token of `ids` once, each with as much context as fits in
    `width` model inputs; the first has an empty context (the backend conditions it on its start token)."""
    if not ids:
        return []
    if width is None:
        return [([], list(ids))]
    windows, start = [], 0
    while start < len(ids):
        end = min(start + width, len(ids))
        windows.append((ids[max(0, end - width - 1) : start], ids[start:end]))
        start = end
    return windows


class MmxLM(LM):
    """lm-eval's three request kinds on top of a Backend: `loglikelihood`, `loglikelihood_rolling`, `generate_until`,
    and its chat hooks.

    Build it from a loaded `backend`, or from a model spec (`model="hf:DIR"`) plus `load_backend` options, which is
    how lm-eval's own `--model mmx --model_args model=...` reaches it. A `tokenizer` there goes to `openai:` backends
    (which count with it) and is otherwise left to lm-eval's tasks (RULER's read it from the model arguments). A model
    built from a spec keeps its own chat template at hand, for `--apply_chat_template`.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        backend: Any = None,
        batch_size: int | str | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        response_log: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if backend is None:
            if not model:
                raise MmxError("the mmx lm-eval model needs a model spec", "pass model_args model=SPEC")
            from mmx.model.backends.base import load_backend
            from mmx.model.backends.chat import IF_PRESENT

            options.pop("max_batch_size", None)  # lm-eval's auto batch search: our backends batch themselves
            if not model.startswith("openai:"):
                options.pop("tokenizer", None)
                options.setdefault("chat_template", IF_PRESENT)  # ready for --apply_chat_template; text stays text
            else:
                options.pop("device", None)  # lm-eval passes its --device to every model; a server places its own
            options["device"] = _usable_device(options.get("device"))
            backend = load_backend(model, **{k: v for k, v in options.items() if v is not None})
        self.backend = backend
        self.chunk = int(batch_size) if str(batch_size or "").isdigit() and int(batch_size) > 0 else DEFAULT_CHUNK
        self.max_gen_toks = max_gen_toks
        self.log = ResponseLog(response_log) if response_log is not None else None
        self.progress = progress
        self._warned_sampling = False

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None) -> MmxLM:
        """lm-eval's constructor path: `--model_args` win over its own `--device`/`--batch_size` (which it always
        passes, with `cuda:0` as the default device), instead of clashing with them."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    # --- lm-eval's interface -----------------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """(context, continuation) -> (log-probability of the continuation, whether greedy decoding produces it)."""
        answers = self._answer("loglikelihood", [tuple(r.args) for r in requests], self._pairs)
        return [(float(lp), bool(greedy)) for lp, greedy in answers]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """(text,) -> log-probability of the whole text, in rolling windows when it is longer than the context."""
        return [
            float(lp) for lp in self._answer("loglikelihood_rolling", [tuple(r.args) for r in requests], self._texts)
        ]

    def generate_until(self, requests: list[Any]) -> list[str]:
        """(context, generation kwargs) -> greedy continuation, cut at the first `until` string."""
        return [str(t) for t in self._answer("generate_until", [tuple(r.args) for r in requests], self._generations)]

    # --- chat (lm-eval's --apply_chat_template) -----------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        """Names the tokenizer in lm-eval's request cache keys."""
        described = self.backend.describe()
        return str(described.get("path") or described.get("spec") or described.get("name")).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """A conversation laid out by the backend's chat template; without a generation prompt the last message (a
        task's answer prefix) is left open for the model to continue."""
        return self.backend.chat_text(
            [dict(message) for message in chat_history],
            continue_final=not add_generation_prompt,
            add_generation_prompt=add_generation_prompt,
        )

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The template lm-eval records with the results."""
        chat = self.backend.chat
        return chat.template if chat is not None else None

    # --- work --------------------------------------------------------------------------------------------------------

    def _answer(self, kind: str, requests: list[tuple[Any, ...]], compute: Callable[[list[tuple]], list[Any]]):
        """Answers in request order: logged ones reused, the rest computed in chunks and logged as they come."""
        keys = [ResponseLog.key(kind, args) for args in requests]
        known = self.log.answers if self.log is not None else {}
        answers: list[Any] = [known.get(k) for k in keys]
        pending = [i for i, k in enumerate(keys) if k not in known]
        done = len(requests) - len(pending)
        self._report(kind, done, len(requests))
        for at in range(0, len(pending), self.chunk):
            batch = pending[at : at + self.chunk]
            results = compute([requests[i] for i in batch])
            for i, result in zip(batch, results, strict=True):
                answers[i] = result
                self.cache_hook.add_partial(kind, requests[i], result)
            if self.log is not None:
                self.log.add([(keys[i], answers[i]) for i in batch])
            done += len(batch)
            self._report(kind, done, len(requests))
        return answers

    def _pairs(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return [(float(lp), bool(greedy)) for lp, greedy in self.backend.loglikelihood([(c, x) for c, x in requests])]

    def _texts(self, requests: list[tuple[str]]) -> list[float]:
        """Whole-text log-likelihoods: token windows when the backend scores token ids, else the text at once."""
        if not self.backend.supports("loglikelihood_tokens"):
            return [lp for lp, _ in self.backend.loglikelihood([("", text) for (text,) in requests])]
        limit = self.backend.max_context
        width = limit - _WINDOW_HEADROOM if limit else None
        totals = []
        for (text,) in requests:
            windows = rolling_windows(self.backend.tokenizer.encode(text), width)
            totals.append(sum(lp for lp, _ in self.backend.loglikelihood_tokens(windows)) if windows else 0.0)
        return totals

    def _generations(self, requests: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """Greedy continuations, one backend call per distinct (stop strings, answer budget) in the chunk."""
        settings = [self._gen_settings(kwargs) for _, kwargs in requests]
        outputs: list[str] = [""] * len(requests)
        for setting in dict.fromkeys(settings):
            members = [i for i, s in enumerate(settings) if s == setting]
            stop, budget = setting
            texts = self.backend.generate([requests[i][0] for i in members], budget, list(stop) or None)
            for i, text in zip(members, texts, strict=True):
                outputs[i] = text
        return outputs

    def _gen_settings(self, kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int]:
        """(stop strings, max new tokens) from lm-eval's generation kwargs; sampling requests are decoded greedily."""
        kwargs = dict(kwargs or {})
        if (kwargs.get("do_sample") or (kwargs.get("temperature") or 0) > 0) and not self._warned_sampling:
            log.warning("a task asks for sampling; mmx decodes greedily and ignores it")
            self._warned_sampling = True
        until = kwargs.get("until") or []
        stops = (until,) if isinstance(until, str) else tuple(s for s in until if s)
        budget = kwargs.get("max_gen_toks") or kwargs.get("max_tokens") or self.max_gen_toks
        return stops, int(budget)

    def _report(self, kind: str, done: int, total: int) -> None:
        if self.progress is not None and total:
            self.progress(kind, done, total)


def _usable_device(device: Any) -> str | None:
    """lm-eval's device, or None (mmx's automatic choice) when it names CUDA on a machine without it, as lm-eval's
    own Hugging Face model falls back too."""
    if device is None or not str(device).startswith("cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return str(device)
    log.warning("device %s is not available here; mmx picks one itself", device)
    return None


def register() -> None:
    """Make `mmx` an lm-eval model name (again is fine)."""
    if "mmx" not in model_registry:
        model_registry.register("mmx", target=MmxLM)


register()
