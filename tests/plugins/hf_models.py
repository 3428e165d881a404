"""Fixtures for backend tests: a tiny Hugging Face causal LM with a locally trained tokenizer, saved to a temp dir;
a chat variant whose tokenizer config carries a chat template with its own special tokens.

Nothing is downloaded: the test session runs with the Hugging Face Hub and datasets offline. The model has random
weights drawn with a large init scale, so its greedy choices win by wide margins and batched (left-padded) and
one-at-a-time runs pick the same tokens despite float noise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

# Before huggingface_hub, datasets or transformers read them (at import): no test may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mmx.model.backends.base import Backend  # noqa: E402

# A chat layout of our own for the tiny model: BOS, then turns `<|turn|>ROLE` newline content `<|end|>` newline.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|turn|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}"
)
CHAT_SPECIALS = ["<|turn|>", "<|end|>"]

_CORPUS = [
    "One of the special magic numbers for {k} is: {v}.",
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    "What are all the special magic numbers for {k} mentioned in the provided text?",
    "Question: which answer is right? Answer: the first one, the second one, or none of them.",
]


def build_tiny_hf(
    directory: Path, *, with_bos: bool = True, seed: int = 0, chat: bool = False, context: int = 4096
) -> Path:
    """Write a 2-layer Llama (hidden 32, vocab ~300, context `context`) and its byte-level BPE tokenizer to
    `directory`; with `chat`, the tokenizer has two more special tokens and `CHAT_TEMPLATE` as its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", *(CHAT_SPECIALS if chat else [])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    lines = [t.format(k=f"key-{i}", v=1000 * i + 7) for i in range(50) for t in _CORPUS]
    tok.train_from_iterator(lines, trainer)
    if with_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat:
        fast.add_special_tokens({"additional_special_tokens": CHAT_SPECIALS})
        fast.chat_template = CHAT_TEMPLATE
    else:
        fast.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        initializer_range=0.5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HF model directory shared by the whole session (building it takes about a second)."""
    return build_tiny_hf(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture(scope="session")
def hf_chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template and its special tokens, and a 2048-token context (so a sweep at the
    model's maximum stays quick)."""
    return build_tiny_hf(tmp_path_factory.mktemp("tiny-hf-chat"), chat=True, context=2048)


@pytest.fixture(scope="session")
def hf_backend(hf_dir: Path):
    """The `hf:` backend over the tiny model, on the CPU in fp32."""
    from mmx.model.backends.base import load_backend

    return load_backend(f"hf:{hf_dir}", device="cpu", batch_size=4)


class LiveServer:
    """`mmx serve`'s server for `backend` on a loopback port (0: a free one), serving from a thread until `stop()`."""

    def __init__(self, backend, port: int = 0, **kwargs) -> None:
        from mmx.workflows.serve.server import make_server

        self.server = make_server(backend, "127.0.0.1", port, **kwargs).start()
        self.url = self.server.url
        self.port = self.server.port
        self.root = self.url.removesuffix("/v1")

    def stop(self) -> None:
        """Shut down as on SIGTERM: new connections are refused, as after a crash."""
        self.server.stop()

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def hf_server(hf_backend):
    """One live server over the tiny HF backend for the session."""
    with LiveServer(hf_backend) as server:
        yield server


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run `mmx ARGS` in-process as the console script does: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from mmx.commands.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


class Faulty(Backend):
    """A backend that fails on purpose: calls `after`+1 … `after`+`times` to `generate` hit `fault` (an exception
    to raise, or "slow" to sleep `delay` seconds first); the rest go to `inner`. `fault = None` heals it. `calls` and
    `scored` count the `generate` and `score_tokens` calls."""

    def __init__(self, inner, fault=None, *, after: int = 0, times: int = 10**9, delay: float = 1.0) -> None:
        import threading

        self.inner, self.fault, self.after, self.times, self.delay = inner, fault, after, times, delay
        self.tokenizer, self.max_context, self.prefix_ids = inner.tokenizer, inner.max_context, inner.prefix_ids
        self.calls = self.scored = 0
        self.lock = threading.Lock()

    def generate(self, prompts, max_new_tokens, stop=None):
        with self.lock:
            self.calls += 1
            hit = self.fault is not None and self.after < self.calls <= self.after + self.times
        if hit and self.fault == "slow":
            time.sleep(self.delay)
        elif hit:
            raise self.fault
        return self.inner.generate(prompts, max_new_tokens, stop)

    def loglikelihood(self, pairs):
        return self.inner.loglikelihood(pairs)

    def prompt_ids(self, text):
        return self.inner.prompt_ids(text)

    def score_tokens(self, sequences, top_k=1, start=1):
        with self.lock:
            self.scored += 1
        return self.inner.score_tokens(sequences, top_k, start)

    def describe(self):
        return self.inner.describe()


@pytest.fixture(scope="session")
def faulty() -> type[Faulty]:
    """`faulty(inner, fault, after=0, times=…, delay=1.0)`: a backend that fails on purpose."""
    return Faulty


@pytest.fixture(scope="session")
def live_server() -> type[LiveServer]:
    """`live_server(backend, port=0, **kwargs)` starts a server; use it as a context manager."""
    return LiveServer


@pytest.fixture(scope="session")
def cli():
    """`cli(args) -> (exit code, stdout, stderr)`."""
    return run_cli
