"""Command-line flags that become `load_backend(spec, **options)` options, shared by `mmx eval`, `mmx serve` and
`mmx eval lm-eval` (`mmx.model.backends.common.backend_options` checks them and keeps only those given)."""

from __future__ import annotations

import typer

DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (native and hf: models).")
DTYPE = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32.")
BATCH_SIZE = typer.Option(
    None, "--batch-size", help="Sequences per forward pass (hf:) or prompts per request (openai:)."
)
MAX_CONTEXT = typer.Option(None, "--max-context", help="Override the model's context length in tokens.")
CHAT_TEMPLATE = typer.Option(
    None,
    "--chat-template",
    help="Lay prompts out as a chat: auto (the model's own template), none, or a Jinja file. The context is the user "
    "turn; the answer prefix opens the assistant turn.",
)
SYSTEM_PROMPT = typer.Option(None, "--system-prompt", help="A system turn before each chat prompt.")
MODEL_ARGS = typer.Option(
    None,
    "--model-args",
    help="hf: key=value,... for from_pretrained (trust_remote_code, attn_implementation, device_map, revision, "
    'rope_scaling={"rope_type":"yarn","factor":4.0}, max_position_embeddings).',
)
API = typer.Option(
    None, "--api", help="openai: completions or chat (default: what the server says, chat for --chat-template auto)."
)
TOKENIZER = typer.Option(
    None,
    "--tokenizer",
    help="openai: how to count tokens: a local HF tokenizer (dir or name), `byte`, `remote` (the server's /tokenize; "
    "the default when the server has it), or `estimate` (the default otherwise).",
)
API_MODEL = typer.Option(None, "--api-model", help="openai: the model name to request (default: the server's first).")
CONCURRENCY = typer.Option(None, "--concurrency", help="openai: requests in flight at once (default: 4).")
TIMEOUT = typer.Option(None, "--timeout", help="openai: seconds to wait for one response (default: 600).")
RETRIES = typer.Option(None, "--retries", help="openai: retries of a failed request, with backoff (default: 4).")
TP = typer.Option(
    None,
    "--tp",
    help="Native models: tensor parallel over N ranks (heads and experts split), in a torchrun job or with --devices.",
)
QUANTIZE_EXPERTS = typer.Option(
    None, "--quantize-experts", help="Native models: expert weights in 8 bits, fp8 or int8 (default: none)."
)
DEVICES = typer.Option(
    None,
    "--devices",
    help="Start one process per device and split the run among them, e.g. 0,1,2,3 (GPUs) or cpu,cpu; "
    "with --tp N, every N of them hold one model.",
)
