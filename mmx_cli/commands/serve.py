"""`mmx serve`: an OpenAI-compatible server (completions and chat, streaming) for a native, Hugging Face or served
model (the server itself is `mmx.workflows.serve`)."""

from __future__ import annotations

import contextlib
import signal
import sys
from datetime import datetime

import typer

from mmx.commands import flags
from mmx.commands.app import app

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _log(line: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


@app.command()
def serve(
    model: str = typer.Option("mmx-mini", "--model", help="Model spec: mmx-mini, mmx:PATH, random:PRESET, hf:…"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0 picks a free one)."),
    served_model_name: str | None = typer.Option(
        None, "--served-model-name", "--name", help="Model id clients request (default: the --model spec)."
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="MMX_API_KEY", help="Require this bearer token on every route (or MMX_API_KEY)."
    ),
    device: str = flags.DEVICE,
    dtype: str = flags.DTYPE,
    batch_size: int | None = flags.BATCH_SIZE,
    max_context: int | None = flags.MAX_CONTEXT,
    chat_template: str | None = typer.Option(
        None,
        "--chat-template",
        help="Template for /v1/chat/completions: auto (the model's own; the default when it has one), none, or a "
        "Jinja file.",
    ),
    model_args: str | None = flags.MODEL_ARGS,
    tokenizer: str | None = flags.TOKENIZER,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    max_tokens_cap: int = typer.Option(16384, "--max-tokens-cap", help="Most new tokens one request may ask for."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests that may wait for the model; more get 503."),
    read_timeout: float = typer.Option(60.0, "--read-timeout", help="Seconds for a request to arrive."),
    shutdown_timeout: float = typer.Option(
        30.0, "--shutdown-timeout", help="On SIGTERM/Ctrl-C, seconds running requests get to finish."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="Do not log requests."),
) -> None:
    """Serve a model over an OpenAI-compatible API: /v1/completions, /v1/chat/completions (streaming, logprobs),
    /v1/models, /tokenize, /health."""
    from mmx.errors import MmxError
    from mmx.model.backends.base import load_backend
    from mmx.model.backends.chat import IF_PRESENT
    from mmx.model.backends.common import backend_options

    if not 0 <= port <= 65535:
        raise MmxError(f"bad --port {port}", "use a port from 0 to 65535 (0 picks a free one)")
    for flag, value in (("--max-tokens-cap", max_tokens_cap), ("--max-queue", max_queue)):
        if value < 1:
            raise MmxError(f"bad {flag} {value}", f"use {flag} 1 or more")
    for flag, value in (("--read-timeout", read_timeout), ("--shutdown-timeout", shutdown_timeout)):
        if value <= 0:
            raise MmxError(f"bad {flag} {value}", "use a positive number of seconds")
    from mmx.workflows.serve.server import make_server

    options = backend_options(
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_context=max_context,
        chat_template=chat_template or (None if model.startswith("openai:") else IF_PRESENT),
        model_args=model_args,
        tokenizer=tokenizer,
        api_model=api_model,
        concurrency=concurrency,
    )
    backend = load_backend(model, **options)
    server = make_server(
        backend,
        host,
        port,
        model_name=served_model_name or model,
        api_key=api_key or None,
        log=None if quiet else _log,
        max_tokens_cap=max_tokens_cap,
        max_queue=max_queue,
        read_timeout=read_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    if host not in _LOOPBACK and not api_key:
        _log(f"warning: listening on {host} without --api-key: anyone who can reach this port can use the model")
    chat = "chat and completions" if server.service.has_chat else "completions (no chat template)"
    name = server.service.model_name
    print(f"serving {name} ({chat}) at {server.url} — use --model openai:{server.url}", flush=True)
    # uvicorn stops gracefully on SIGTERM, then re-raises it: this handler lets the process end normally (exit 0).
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has already shut down gracefully
        server.run()
    _log("stopped")
