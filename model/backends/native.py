"""The native backend: our `MiniMaxForCausalLM` and `mmx.model.generate` behind the `Backend` protocol.

Registers three spec prefixes: a bare name (weights shipped in `model/weights/<name>/`, e.g. the embedded default
`mmx-mini`), `mmx:PATH` (a checkpoint directory written by `save_pretrained` or an original MiniMax one), and
`random:PRESET[:SEED]` (random weights, for smoke tests and speed). Generation is greedy; prompts start with BOS and
stop at EOS when the config names them, which is how `mmx train` lays out its documents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from mmx.errors import MmxError
from mmx.model.backends.base import Backend, register_backend
from mmx.model.backends.common import check_options, cut_at_stop, dtype_name, resolve_device, resolve_dtype
from mmx.model.config import PRESETS, WEIGHTS_DIR, MiniMaxConfig
from mmx.model.generate import DEFAULT_CHUNK, activation_bytes, auto_chunk
from mmx.model.memory import free_memory
from mmx.model.tokenizer import ByteTokenizer, JsonTokenizer

# --batch-size auto: share of the free memory a batch may plan to use, and the most rows worth batching on each device.
_MEMORY_SHARE = {"cuda": 0.8, "cpu": 0.5}
_MAX_BATCH = {"cuda": 64, "cpu": 8}


def weights_digest(directory: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files in name order: pins a run to the exact weights it scored."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_tokenizer(config: MiniMaxConfig, directory: Path | None) -> Any:
    """The byte tokenizer for byte-vocabulary models; otherwise the checkpoint's own `tokenizer.json`."""
    if config.vocab_size == ByteTokenizer.vocab_size:
        return ByteTokenizer()
    path = directory / "tokenizer.json" if directory is not None else None
    if path is None or not path.is_file():
        where = f"in {directory}" if directory is not None else "for a random-weight model"
        raise MmxError(
            f"a {config.vocab_size}-token vocabulary needs a tokenizer.json, and there is none {where}",
            "add the model's tokenizer.json to the checkpoint directory, or use a byte-vocabulary preset",
        )
    return JsonTokenizer(path)


class NativeBackend(Backend):
    """A loaded `MiniMaxForCausalLM`: greedy generation with stop strings, log-likelihoods, and a memory-aware batch
    size for `--batch-size auto`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        spec: str,
        name: str,
        info: dict[str, Any],
        max_context: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.config: MiniMaxConfig = model.config
        self.tokenizer = tokenizer
        self.max_context = int(max_context or self.config.max_position_embeddings)
        self.batch_size = batch_size  # most rows per generate() batch; None: all prompts of a call at once
        self.spec = spec
        self.name = name
        self.info = info
        # On a GPU, prompts stream through the cache in chunks as long as the activation budget allows, which
        # amortises each layer's launches; a CPU is faster in short ones (mmx-mini, a 32k prompt: 5.3 s in 4k chunks,
        # 7.3 s in 64k).
        elem = torch.finfo(self.model.dtype).bits // 8
        on_gpu = self.model.device.type == "cuda"
        self.prefill_chunk = auto_chunk(self.config, elem) if on_gpu else DEFAULT_CHUNK
        bos, eos = self.config.bos_token_id, self.config.eos_token_id
        self.prefix_ids = [bos] if bos is not None else []
        self.stop_ids = (eos,) if eos is not None else ()

    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        """Greedy continuations of `prompts`, cut before the first stop string (or EOS)."""
        from mmx.model.generate import generate

        stops = [s for s in (stop or []) if s]
        ids = [self.prompt_ids(p) for p in prompts]
        step = self.batch_size or max(1, len(ids))
        outputs = []
        for start in range(0, len(ids), step):
            outputs += generate(
                self.model,
                ids[start : start + step],
                max_new_tokens,
                stop_ids=self.stop_ids,
                stop_sequences=[self.tokenizer.encode(s) for s in stops],
                chunk_size=self.prefill_chunk,
            )
        texts = [self.tokenizer.decode(out) for out in outputs]
        return [cut_at_stop(text, stops) for text in texts]

    def loglikelihood_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For each (context ids, continuation ids): log P(continuation | context) and whether greedy decoding yields
        it; an empty context conditions on EOS, as lm-eval does."""
        from mmx.model.generate import token_logprobs

        results = []
        for context, continuation in pairs:
            ctx = list(context) or list(self.prefix_ids) or list(self.stop_ids)
            if not ctx:
                raise MmxError("an empty context needs a BOS or EOS token", "set bos_token_id in config.json")
            cont = list(continuation)
            logprobs, greedy = token_logprobs(self.model, ctx + cont, start=len(ctx), chunk_size=self.prefill_chunk)
            results.append((float(sum(logprobs)), all(greedy)))
        return results

    def row_bytes(self, tokens: int) -> int:
        """Memory one batch row of `tokens` tokens holds: softmax K/V, fp32 lightning states, and its logits."""
        c = self.config
        elem = torch.finfo(self.model.dtype).bits // 8
        kv = 2 * len(c.softmax_layers) * c.num_key_value_heads * c.head_dim * tokens * elem
        states = len(c.lightning_layers) * c.num_attention_heads * c.head_dim**2 * 4
        return kv + states + c.vocab_size * 4

    def prefill_bytes(self, tokens: int) -> int:
        """Activations of one prefill chunk (`generate` prefills one prompt at a time, so this is paid once)."""
        elem = torch.finfo(self.model.dtype).bits // 8
        # plus a row of logits per token: a log-likelihood pass keeps them for the scored positions
        return min(tokens, self.prefill_chunk) * (activation_bytes(self.config, elem) + self.config.vocab_size * elem)

    def auto_batch_size(self, length: int, max_new_tokens: int) -> int:
        """How many prompts of `length` tokens to decode together in the device's free memory (at least 1; the
        runner halves the batch on an out-of-memory anyway). While a row is prefilled, its own single-row cache
        exists beside the batch cache, hence one row more than the batch."""
        device = self.model.device
        budget = free_memory(device) * _MEMORY_SHARE[device.type] - self.prefill_bytes(length)
        fits = int(budget // self.row_bytes(length + max_new_tokens)) - 1
        return max(1, min(_MAX_BATCH[device.type], fits))

    def describe(self) -> dict[str, Any]:
        """Enough to reproduce: spec, weights (path and digest, or preset and seed), config, dtype, device."""
        return {
            "spec": self.spec,
            "name": self.name,
            "backend": "native",
            **self.info,
            "config": self.config.to_dict(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "tokenizer": self.tokenizer.describe(),
            "max_context": self.max_context,
            "dtype": dtype_name(self.model.dtype),
            "device": str(self.model.device),
            "prefill_chunk": self.prefill_chunk,
        }


_OPTIONS = ("device", "dtype", "max_context", "batch_size")


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options native models take (None values dropped); any other is one MmxError."""
    given = check_options(options, _OPTIONS, "native models")
    for key in ("max_context", "batch_size"):
        if key in given and int(given[key]) < 1:
            raise MmxError(f"bad {key} {given[key]}", f"use a {key} of 1 or more")
    return given


def load_checkpoint(directory: Path, *, spec: str, name: str, options: dict[str, Any], **info: Any) -> NativeBackend:
    """A backend over the checkpoint in `directory`; a missing directory or weights is one MmxError."""
    from mmx.model.modeling import MiniMaxForCausalLM

    opts = _check_options(options)

    if not directory.is_dir():
        raise MmxError(f"checkpoint directory {directory} does not exist", "pass mmx:PATH to a saved checkpoint")
    if not any(directory.glob("*.safetensors")):
        raise MmxError(f"no *.safetensors weights in {directory}", "point at a directory written by save_pretrained")
    config = MiniMaxConfig.from_pretrained(directory)
    tokenizer = checkpoint_tokenizer(config, directory)
    place = resolve_device(opts.get("device"))
    model = MiniMaxForCausalLM.from_pretrained(directory, device=place, dtype=resolve_dtype(opts.get("dtype"), place))
    info = {"random_weights": False, "checkpoint": str(directory), "weights_sha256": weights_digest(directory), **info}
    return NativeBackend(
        model,
        tokenizer,
        spec=spec,
        name=name,
        info=info,
        max_context=opts.get("max_context"),
        batch_size=opts.get("batch_size"),
    )


def from_name(name: str, **options: Any) -> NativeBackend:
    """A model shipped with mmx, by name (`mmx-mini`); a preset without shipped weights points at `random:`."""
    directory = WEIGHTS_DIR / name
    if (directory / "config.json").is_file():
        return load_checkpoint(directory, spec=name, name=name, options=options, preset=name)
    if name in PRESETS:
        raise MmxError(
            f"no weights are shipped for {name!r}",
            f"use --model random:{name} for random weights of that architecture, or mmx:PATH for a checkpoint",
        )
    shipped = sorted(p.parent.name for p in WEIGHTS_DIR.glob("*/config.json")) if WEIGHTS_DIR.is_dir() else []
    raise MmxError(
        f"unknown model {name!r}",
        f"use {' or '.join([*shipped, 'random:PRESET', 'mmx:PATH'])}, or hf:/openai: (presets: {', '.join(PRESETS)})",
    )


def from_path(path: str, **options: Any) -> NativeBackend:
    """`mmx:PATH`: a checkpoint directory."""
    if not path:
        raise MmxError("mmx: needs a checkpoint directory", "write mmx:PATH, e.g. mmx:runs/train-1/final")
    directory = Path(path).expanduser()
    return load_checkpoint(directory, spec=f"mmx:{path}", name=directory.resolve().name, options=options)


def parse_random_spec(rest: str) -> tuple[str, int]:
    """`PRESET[:SEED]` (what follows `random:`) -> (preset, seed); the seed defaults to 0."""
    preset, _, seed_text = rest.partition(":")
    if seed_text and not seed_text.strip().isdigit():
        raise MmxError(f"bad seed {seed_text!r} in random:{rest}", "write random:PRESET or random:PRESET:SEED")
    return preset, int(seed_text or 0)


def from_random(rest: str, **options: Any) -> NativeBackend:
    """`random:PRESET[:SEED]`: random weights drawn on the CPU from SEED (default 0), so every device gets the same."""
    from mmx.model.modeling import MiniMaxForCausalLM

    opts = _check_options(options)
    preset, seed = parse_random_spec(rest)
    config = MiniMaxConfig.from_name(preset)
    tokenizer = checkpoint_tokenizer(config, None)
    place = resolve_device(opts.get("device"))
    with torch.device("meta"):
        model = MiniMaxForCausalLM(config)
    model = model.to_empty(device="cpu")
    model.init_weights(seed)
    model = model.to(device=place, dtype=resolve_dtype(opts.get("dtype"), place))
    return NativeBackend(
        model,
        tokenizer,
        spec=f"random:{rest}",
        name=f"{preset} (random weights)",
        info={"random_weights": True, "preset": preset, "seed": seed},
        max_context=opts.get("max_context"),
        batch_size=opts.get("batch_size"),
    )


register_backend("name", from_name)
register_backend("mmx", from_path)
register_backend("random", from_random)
