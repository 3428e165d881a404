"""`mmx serve`: an OpenAI-compatible completions server for a native or Hugging Face model (the server itself is
`mmx.workflows.serve.server`)."""

from __future__ import annotations

import signal
import sys
import threading
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
    name: str | None = typer.Option(None, "--name", help="Model name clients request (default: the model's)."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="MMX_SERVE_API_KEY", help="Require this bearer token from clients."
    ),
    device: str = flags.DEVICE,
    dtype: str = flags.DTYPE,
    batch_size: int | None = flags.BATCH_SIZE,
    max_context: int | None = flags.MAX_CONTEXT,
    chat_template: str | None = flags.CHAT_TEMPLATE,
    tokenizer: str | None = flags.TOKENIZER,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    quiet: bool = typer.Option(False, "--quiet", help="Do not log requests."),
) -> None:
    """Serve a model over an OpenAI-compatible API: /v1/completions (with echo + logprobs), /v1/models, /tokenize."""
    from mmx.model.backends.base import load_backend
    from mmx.model.backends.common import backend_options
    from mmx.workflows.serve.server import make_server

    options = backend_options(
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_context=max_context,
        chat_template=chat_template,
        tokenizer=tokenizer,
        api_model=api_model,
        concurrency=concurrency,
    )
    backend = load_backend(model, **options)
    server = make_server(backend, host, port, model_name=name, api_key=api_key, log=None if quiet else _log)
    if host not in _LOOPBACK and api_key is None:
        _log(f"warning: listening on {host} without --api-key: anyone who can reach this port can use the model")
    # SIGTERM stops the server like Ctrl-C does; shutdown() waits for serve_forever, so it runs on its own thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(
        f"serving {server.service.model_name} ({model}) at {server.url} — use --model openai:{server.url}", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    _log("stopped")
