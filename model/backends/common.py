"""Helpers the backends share: devices and dtypes by name, stop strings, `--model-args`, and the check of a backend's
options."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from mmx.errors import MmxError

DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/`auto` -> CUDA when present, else CPU; an unusable choice is one MmxError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise MmxError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise MmxError("CUDA is not available on this machine", "use --device cpu")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise MmxError(f"no device {chosen}", f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type != "cpu":
        raise MmxError(f"device type {chosen.type!r} is not supported", "use cpu or cuda")
    return chosen


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`None`/`auto` -> bf16 on CUDA, fp32 on CPU; names like bf16/fp16/fp32 or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise MmxError(f"unknown dtype {dtype!r}", "use auto, bf16, fp16 or fp32")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name a run records: bf16, fp16, fp32 (else torch's own name)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def cut_at_stop(text: str, stops: Iterable[str]) -> str:
    """`text` up to the earliest stop string (token-level stops can miss a string split across tokens)."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(ends)] if ends else text


def parse_model_args(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """`--model-args`: a JSON object, or `key=value,...` where each value is read as JSON when it parses (true, 4,
    {"rope_type": "yarn", "factor": 4.0}) and as a string otherwise; commas inside brackets or quotes do not split."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            hint = "write key=value,... or a JSON object"
            raise MmxError(f"--model-args is not valid JSON ({err.msg})", hint) from None
        if not isinstance(value, dict):
            raise MmxError("--model-args must be a JSON object", "write key=value,... or a JSON object")
        return value
    args: dict[str, Any] = {}
    for item in _split_top_level(text):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise MmxError(f"bad --model-args item {item!r}", "write key=value,... e.g. trust_remote_code=true")
        try:
            args[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            args[key.strip()] = raw.strip()
    return args


def _split_top_level(text: str) -> list[str]:
    """`text` split at commas outside brackets and quotes, empty items dropped."""
    items, depth, quote, start = [], 0, "", 0
    for at, char in enumerate(text):
        if quote:
            quote = "" if char == quote and text[at - 1] != "\\" else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:at])
            start = at + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def check_options(options: Mapping[str, Any], known: Iterable[str], kind: str) -> dict[str, Any]:
    """The options a backend of `kind` takes (None values dropped); any other is one MmxError naming the valid ones."""
    accepted = sorted(known)
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise MmxError(f"option {unknown[0]!r} does not apply to {kind}", f"{kind} take {', '.join(accepted)}")
    return given


def backend_options(
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    max_context: int | None = None,
    chat_template: str | None = None,
    system_prompt: str | None = None,
    model_args: str | None = None,
    tokenizer: str | None = None,
    api: str | None = None,
    api_model: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    tp: int | None = None,
    quantize_experts: str | None = None,
) -> dict[str, Any]:
    """The options the user set, checked and named as backends take them (`--api-model` is the openai backend's
    `model`). Only options actually given are kept, so a backend never sees one that does not apply to it (an
    `openai:` model has no device) unless the user asked for it, and then it says so."""
    if dtype != "auto" and dtype not in DTYPES:
        raise MmxError(f"unknown dtype {dtype!r}", "use one of auto, bf16, fp16, fp32")
    counts = {"--batch-size": batch_size, "--concurrency": concurrency, "--max-context": max_context, "--tp": tp}
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise MmxError(f"bad {flag} {value}", f"use {flag} 1 or more")
    if retries is not None and retries < 0:
        raise MmxError(f"bad --retries {retries}", "use --retries 0 or more")
    if timeout is not None and timeout <= 0:
        raise MmxError(f"bad --timeout {timeout}", "use a positive number of seconds")
    if quantize_experts not in (None, "none", "fp8", "int8"):
        raise MmxError(f"unknown --quantize-experts {quantize_experts!r}", "use none, fp8 or int8")
    if api is not None and api not in ("auto", "completions", "chat"):
        raise MmxError(f"bad --api {api!r}", "use completions, chat, or auto")
    chosen = {
        "device": None if device == "auto" else device,
        "dtype": None if dtype == "auto" else dtype,
        "batch_size": batch_size,
        "max_context": max_context,
        "chat_template": chat_template,
        "system_prompt": system_prompt or None,
        "model_args": parse_model_args(model_args) or None,
        "tokenizer": tokenizer,
        "api": None if api == "auto" else api,
        "model": api_model,
        "concurrency": concurrency,
        "timeout": timeout,
        "retries": retries,
        "tp": None if tp == 1 else tp,  # the default (one process per model) is no option at all
        "quantize_experts": None if quantize_experts == "none" else quantize_experts,
    }
    return {key: value for key, value in chosen.items() if value is not None}
