"""Command-line flags that become `load_backend(spec, **options)` options, shared by `mmx serve` and `mmx eval lm-eval`.

Only flags the user actually gave become options, so a backend never sees one that does not apply to it (an `openai:`
model has no device; an `hf:` model has no concurrency) unless the user asked for it, and then it says so.
"""

from __future__ import annotations

from typing import Any

import typer

from mmx.errors import MmxError

DTYPES = ("auto", "bf16", "fp16", "fp32")

DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (native and hf: models).")
DTYPE = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32.")
BATCH_SIZE = typer.Option(
    None, "--batch-size", help="Sequences per forward pass (hf:) or prompts per request (openai:)."
)
MAX_CONTEXT = typer.Option(None, "--max-context", help="Override the model's context length in tokens.")
CHAT_TEMPLATE = typer.Option(
    None, "--chat-template", help="hf: wrap prompts in a chat template: `tokenizer` (the model's own) or a Jinja file."
)
TOKENIZER = typer.Option(
    None,
    "--tokenizer",
    help="openai: how to count tokens: a local HF tokenizer dir, `byte`, or `remote` (the server's /tokenize; "
    "the default when the server has it).",
)
API_MODEL = typer.Option(None, "--api-model", help="openai: the model name to request (default: the server's first).")
CONCURRENCY = typer.Option(None, "--concurrency", help="openai: requests in flight at once (default: 4).")
TIMEOUT = typer.Option(None, "--timeout", help="openai: seconds to wait for one response (default: 600).")
RETRIES = typer.Option(None, "--retries", help="openai: retries of a failed request, with backoff (default: 4).")


def backend_options(
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    max_context: int | None = None,
    chat_template: str | None = None,
    tokenizer: str | None = None,
    api_model: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retries: int | None = None,
) -> dict[str, Any]:
    """The options the user set, named as backends take them (`--api-model` is the openai backend's `model`)."""
    if dtype not in DTYPES:
        raise MmxError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    for flag, value in (("--batch-size", batch_size), ("--concurrency", concurrency), ("--max-context", max_context)):
        if value is not None and value < 1:
            raise MmxError(f"bad {flag} {value}", f"use {flag} 1 or more")
    if retries is not None and retries < 0:
        raise MmxError(f"bad --retries {retries}", "use --retries 0 or more")
    if timeout is not None and timeout <= 0:
        raise MmxError(f"bad --timeout {timeout}", "use a positive number of seconds")
    chosen = {
        "device": None if device == "auto" else device,
        "dtype": None if dtype == "auto" else dtype,
        "batch_size": batch_size,
        "max_context": max_context,
        "chat_template": chat_template,
        "tokenizer": tokenizer,
        "model": api_model,
        "concurrency": concurrency,
        "timeout": timeout,
        "retries": retries,
    }
    return {key: value for key, value in chosen.items() if value is not None}
