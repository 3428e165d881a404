"""The native backend: our `MiniMaxForCausalLM` and `mmx.model.generate` behind the `Backend` protocol.

Registers three spec prefixes: a bare name (weights shipped in `model/weights/<name>/`, e.g. the embedded default
`mmx-mini`), `mmx:PATH` (a checkpoint directory written by `save_pretrained` or an original MiniMax one), and
`random:PRESET[:SEED]` (random weights, for smoke tests and speed). Generation is greedy; prompts start with BOS and
stop at EOS when the config names them, which is how `mmx train` lays out its documents. A checkpoint that keeps a chat
template beside its tokenizer (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`) formats prompts
as a conversation with `chat_template="auto"`; any model takes a Jinja file.

It implements the token-level methods `generate_tokens`, `loglikelihood_tokens` and `score_tokens`, so `mmx serve`
streams its tokens and reports their log-probabilities.

Prompts that begin alike are prefilled through a `PrefixWalker` (`mmx.model.prefix`): their common beginning once,
then each one's own rest. Within one `generate` call that happens by itself; a `prefill_scope` over a whole sweep cell
extends it across the cell's calls, and can switch it off.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmx.errors import MmxError
from mmx.model.backends.base import Backend, PrefillLog, TokenScore, register_backend
from mmx.model.backends.chat import build_chat, checkpoint_template, jinja_renderer
from mmx.model.backends.common import check_options, cut_at_stop, dtype_name, resolve_device, resolve_dtype
from mmx.model.config import PRESETS, WEIGHTS_DIR, MiniMaxConfig
from mmx.model.generate import GenerateStats, measured_chunk, planned_chunk, token_scores
from mmx.model.memory import free_memory, is_out_of_memory, release_memory
from mmx.model.parallel.layout import ShardLayout, check_tp
from mmx.model.parallel.quant import check_kind
from mmx.model.parallel.runtime import ParallelContext, join, launched, rank_device
from mmx.model.prefix import PrefixWalker, branch_points
from mmx.model.tokenizer import ByteTokenizer, JsonTokenizer

if TYPE_CHECKING:
    from mmx.model.parallel.plan import MemoryPlan

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


@dataclass
class _Scope:
    """An open `prefill_scope`: the walker its prompts go through (None: each prompt alone) and the log it yields."""

    walker: PrefixWalker | None
    log: PrefillLog


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
        parallel: ParallelContext | None = None,
        chat_template: str | None = None,
        system_prompt: str | None = None,
        directory: Path | None = None,
    ) -> None:
        self.model = model.eval().pack_experts()  # MoE routing without host syncs
        self.parallel = parallel  # the torchrun job this rank belongs to (None: one process)
        self.config: MiniMaxConfig = model.config
        self.tokenizer = tokenizer
        self.max_context = int(max_context or self.config.max_position_embeddings)
        self.batch_size = batch_size  # most rows per generate() batch; None: all prompts of a call at once
        self.spec = spec
        self.name = name
        self.info = info
        # Prompts stream through the cache in chunks; on a GPU as long as the activations, measured once here, fit a
        # share of the free memory (fewer, larger launches per prompt), on a CPU short ones (faster there).
        self.prefill_chunk, self.activation_bytes = measured_chunk(self.model)
        bos, eos = self.config.bos_token_id, self.config.eos_token_id
        self.prefix_ids = [bos] if bos is not None else []
        self.stop_ids = (eos,) if eos is not None else ()
        self._scope: _Scope | None = None
        self.vocab_size = self.config.vocab_size
        specials = {"bos_token": _token_text(tokenizer, bos), "eos_token": _token_text(tokenizer, eos)}
        self.chat = build_chat(
            chat_template,
            own=checkpoint_template(directory),
            renderer=lambda template: jinja_renderer(template, specials),
            system=system_prompt,
            bos_token=specials["bos_token"],
            where=f"the checkpoint {directory}" if directory is not None else f"{name}",
        )

    @contextmanager
    def prefill_scope(self, prompts: list[str], reuse: bool = True) -> Iterator[PrefillLog]:
        """Inside, `generate` calls over `prompts` share one walker (with `reuse`; else every prompt is prefilled
        alone), which keeps the lightning states where the prompts part until the scope closes."""
        walker = None
        if reuse:
            walker = PrefixWalker(self.model, self.prefill_chunk, branch_points([self.prompt_ids(p) for p in prompts]))
        self._scope = _Scope(walker, PrefillLog())
        try:
            yield self._scope.log
        finally:
            self._scope = None

    def chat_ids(
        self,
        messages: list[dict[str, str]],
        *,
        continue_final: bool = False,
        add_generation_prompt: bool | None = None,
    ) -> list[int]:
        """A conversation's ids, starting with BOS as every native document does (a byte tokenizer cannot spell it
        in the template's text, so it is put first unless the template wrote it)."""
        ids = self.tokenizer.encode(self._render_chat(messages, continue_final, add_generation_prompt))
        if self.prefix_ids and ids[: len(self.prefix_ids)] != self.prefix_ids:
            ids = [*self.prefix_ids, *ids]
        return ids

    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None = None) -> list[str]:
        """Greedy continuations of `prompts`, cut before the first stop string (or EOS)."""
        stops = [s for s in (stop or []) if s]
        outputs = self.generate_tokens([self.prompt_ids(p) for p in prompts], max_new_tokens, stops)
        return [cut_at_stop(self.tokenizer.decode(out), stops) for out in outputs]

    @torch.inference_mode()
    def generate_tokens(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str] | None = None, *, hook: Any = None
    ) -> list[list[int]]:
        """Greedy new token ids for token-id prompts taken verbatim; a row ends before EOS or a stop string's tokens.
        `hook` hears each token as it is chosen and may cancel between steps. Inside a `prefill_scope` the scope's
        log hears what each prompt prefilled."""
        stops = [s for s in (stop or []) if s]
        for ids in prompts:
            if not ids:
                raise MmxError("a prompt needs at least one token", "send a non-empty prompt")
            if len(ids) + max_new_tokens > self.max_context:
                raise MmxError(
                    f"a prompt of {len(ids)} tokens plus {max_new_tokens} new tokens exceeds the model's context of "
                    f"{self.max_context} tokens",
                    "use shorter lengths, or pass --max-context if the model extrapolates",
                )
        step = self.batch_size or max(1, len(prompts))
        stop_sequences = [self.tokenizer.encode(s) for s in stops]
        log = PrefillLog(prefill_s=0.0)
        outputs: list[list[int]] = []
        for start in range(0, len(prompts), step):
            batch = [list(p) for p in prompts[start : start + step]]
            watch = None if hook is None else _Offset(hook, start)
            outputs += self._generate_batch(batch, max_new_tokens, stop_sequences, log, watch)
        if self._scope is not None:
            self._scope.log.prefilled, self._scope.log.read = log.prefilled, log.read
            self._scope.log.prefill_s = log.prefill_s
        return outputs

    def score_tokens(self, sequences: list[list[int]], top_k: int = 1, start: int = 1) -> list[list[TokenScore]]:
        """Per-position scores of each sequence from position `start` on, with the `top_k` best alternatives."""
        scored = []
        for ids in sequences:
            if len(ids) - 1 > self.max_context:
                raise MmxError(
                    f"a sequence of {len(ids)} tokens exceeds the model's context of {self.max_context}",
                    "score a shorter text",
                )
            first = max(1, start)
            if first >= len(ids):
                scored.append([])
                continue
            rows = token_scores(self.model, ids, first, top_k, chunk_size=self.prefill_chunk)
            scored.append([TokenScore(lp, greedy, tuple(top)) for lp, greedy, top in rows])
        return scored

    def _walker_for(self, ids: list[list[int]]) -> PrefixWalker | None:
        """The scope's walker; outside a scope, one for this batch when its prompts share enough to be worth it."""
        if self._scope is not None:
            return self._scope.walker
        points = branch_points(ids) if len(ids) > 1 else []
        return PrefixWalker(self.model, self.prefill_chunk, points) if points else None

    def _generate_batch(
        self,
        ids: list[list[int]],
        max_new_tokens: int,
        stop_sequences: list[list[int]],
        log: PrefillLog,
        hook: Any = None,
    ) -> list[list[int]]:
        """One `mmx.model.generate.generate` call. Prefix reuse holds more memory than prefilling each prompt alone
        (the walker's row and its state copies): if it runs out of memory, the scope goes on without it."""
        from mmx.model.generate import generate

        walker = self._walker_for(ids)
        stats = GenerateStats()
        run = dict(
            stop_ids=self.stop_ids, stop_sequences=stop_sequences, chunk_size=self.prefill_chunk, stats=stats, hook=hook
        )
        outputs = None
        try:
            outputs = generate(self.model, ids, max_new_tokens, walker=walker, **run)
        except Exception as err:
            if walker is None or not is_out_of_memory(err):
                raise
        if outputs is None:  # out of memory with the walker; released outside the handler, whose frames held it
            walker = None
            if self._scope is not None:
                self._scope.walker = None
            release_memory()
            outputs = generate(self.model, ids, max_new_tokens, **run)
        log.prefilled += stats.prefilled
        log.read += stats.read
        log.prefill_s = (log.prefill_s or 0.0) + stats.prefill_s
        return outputs

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
        c = self.model.cache_config  # this rank's heads under tensor parallelism
        elem = torch.finfo(self.model.dtype).bits // 8
        kv = 2 * len(c.softmax_layers) * c.num_key_value_heads * c.head_dim * tokens * elem
        states = len(c.lightning_layers) * c.num_attention_heads * c.head_dim**2 * 4
        return kv + states + c.vocab_size * 4

    def prefill_bytes(self, tokens: int) -> int:
        """Activations of one prefill chunk (`generate` prefills one prompt at a time, so this is paid once)."""
        elem = torch.finfo(self.model.dtype).bits // 8
        # plus a row of logits per token: a log-likelihood pass keeps them for the scored positions
        return min(tokens, self.prefill_chunk) * (self.activation_bytes + self.config.vocab_size * elem)

    def auto_batch_size(self, length: int, max_new_tokens: int) -> int:
        """How many prompts of `length` tokens to decode together in the device's free memory (at least 1; the
        runner halves the batch on an out-of-memory anyway). While a row is prefilled, its own single-row cache
        (or a prefill scope's walker, with its state copies) exists beside the batch cache, hence one row more than the
        batch."""
        device = self.model.device
        budget = free_memory(device) * _MEMORY_SHARE[device.type] - self.prefill_bytes(length)
        if self._scope is not None and self._scope.walker is not None:  # its row is the one counted below
            budget -= self._scope.walker.snapshot_bytes()
        fits = int(budget // self.row_bytes(length + max_new_tokens)) - 1
        chosen = max(1, min(_MAX_BATCH[device.type], fits))
        if self.parallel is not None and self.parallel.tp_group is not None:  # one batch for the whole replica
            from mmx.model.parallel.comm import all_min

            chosen = all_min(chosen, self.parallel.tp_group)
        return chosen

    def describe(self) -> dict[str, Any]:
        """Enough to reproduce: spec, weights (path and digest, or preset and seed), config, dtype, device."""
        return {
            "spec": self.spec,
            "name": self.name,
            "backend": "native",
            **self.info,
            "config": self.config.to_dict(),
            "parameters": self.info.get("parameters") or sum(p.numel() for p in self.model.parameters()),
            "tokenizer": self.tokenizer.describe(),
            "max_context": self.max_context,
            "chat_template": self.chat.describe() if self.chat is not None else None,
            "dtype": dtype_name(self.model.dtype),
            "device": str(self.model.device),
            "prefill_chunk": self.prefill_chunk,
        }


class _Offset:
    """A generation hook seen through a batch that starts at prompt `offset` (rows are numbered per batch)."""

    def __init__(self, hook: Any, offset: int) -> None:
        self.hook, self.offset = hook, offset

    def token(self, row: int, token: int) -> None:
        self.hook.token(row + self.offset, token)

    def check(self) -> None:
        self.hook.check()


def _token_text(tokenizer: Any, token_id: int | None) -> str | None:
    """How a special token is written in text, for templates that print it (None for the byte tokenizer)."""
    if token_id is None or isinstance(tokenizer, ByteTokenizer):
        return None
    return tokenizer.token_text(token_id)


_OPTIONS = ("device", "dtype", "max_context", "batch_size", "tp", "quantize_experts", "chat_template", "system_prompt")


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options native models take (None values dropped); any other is one MmxError."""
    given = check_options(options, _OPTIONS, "native models")
    for key in ("max_context", "batch_size", "tp"):
        if key in given and int(given[key]) < 1:
            raise MmxError(f"bad {key} {given[key]}", f"use a {key} of 1 or more")
    check_kind(given.get("quantize_experts"))
    return given


@dataclass(frozen=True)
class Placement:
    """Where a native model runs: device and dtype, its tensor-parallel share, and whether its experts are 8-bit."""

    device: torch.device
    dtype: torch.dtype
    tp: int
    quantize: str | None
    context: ParallelContext

    @property
    def sharded(self) -> bool:
        """Whether the model is built part by part (`mmx.model.parallel.build`) rather than whole."""
        return self.tp > 1 or self.quantize is not None

    def layout(self, config: MiniMaxConfig) -> ShardLayout:
        return ShardLayout(config, self.context.tp_rank, self.tp)

    def info(self, config: MiniMaxConfig) -> dict[str, Any]:
        """What run.json records about the placement (nothing for a plain single-process model, as before)."""
        from mmx.model.parallel.build import global_shapes

        if not self.sharded:
            return {}
        shapes = global_shapes(config).values()
        info: dict[str, Any] = {"parameters": sum(int(torch.Size(s).numel()) for s in shapes)}
        if self.tp > 1:
            info["tensor_parallel"] = self.tp
        if self.quantize:
            info["quantized_experts"] = self.quantize
        return info


def placement(options: dict[str, Any], config: MiniMaxConfig) -> Placement:
    """Resolve --device, --dtype, --tp and --quantize-experts for `config`; under torchrun each rank takes its GPU."""
    opts = _check_options(options)
    tp = int(opts.get("tp") or 1)
    check_tp(config, tp)
    context = join(tp, opts.get("device"))
    device = context.device if context.device is not None else resolve_device(opts.get("device"))
    dtype = resolve_dtype(opts.get("dtype"), device)
    return Placement(device, dtype, tp, check_kind(opts.get("quantize_experts")), context)


def load_checkpoint(directory: Path, *, spec: str, name: str, options: dict[str, Any], **info: Any) -> NativeBackend:
    """A backend over the checkpoint in `directory`; a missing directory or weights is one MmxError."""
    from mmx.model.modeling import MiniMaxForCausalLM
    from mmx.model.parallel.build import load_sharded

    opts = _check_options(options)

    if not directory.is_dir():
        raise MmxError(f"checkpoint directory {directory} does not exist", "pass mmx:PATH to a saved checkpoint")
    if not any(directory.glob("*.safetensors")):
        raise MmxError(f"no *.safetensors weights in {directory}", "point at a directory written by save_pretrained")
    config = MiniMaxConfig.from_pretrained(directory)
    tokenizer = checkpoint_tokenizer(config, directory)
    place = placement(opts, config)
    if place.sharded:
        group = place.context.tp_group
        model = load_sharded(directory, place.layout(config), group, place.device, place.dtype, place.quantize)
    else:
        model = MiniMaxForCausalLM.from_pretrained(directory, device=place.device, dtype=place.dtype)
    info = {"random_weights": False, "checkpoint": str(directory), "weights_sha256": weights_digest(directory), **info}
    return NativeBackend(
        model,
        tokenizer,
        spec=spec,
        name=name,
        info={**info, **place.info(config)},
        max_context=opts.get("max_context"),
        batch_size=opts.get("batch_size"),
        parallel=place.context,
        chat_template=opts.get("chat_template"),
        system_prompt=opts.get("system_prompt"),
        directory=directory,
    )


def from_name(name: str, **options: Any) -> NativeBackend:
    """A model shipped with mmx, by name (`mmx-mini`); a preset without shipped weights points at `random:`."""
    directory = WEIGHTS_DIR / name
    if (directory / "config.json").is_file():
        # The install path is the user's machine, not the model's identity: the name and the weights' digest are.
        shipped = f"{name} (shipped with mmx)"
        return load_checkpoint(directory, spec=name, name=name, options=options, preset=name, checkpoint=shipped)
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
    from mmx.model.parallel.build import random_sharded

    opts = _check_options(options)
    preset, seed = parse_random_spec(rest)
    config = MiniMaxConfig.from_name(preset)
    tokenizer = checkpoint_tokenizer(config, None)
    place = placement(opts, config)
    if place.sharded:  # each rank keeps its part of the very weights one process would draw
        model = random_sharded(
            place.layout(config), place.context.tp_group, place.device, place.dtype, seed, place.quantize
        )
    else:
        with torch.device("meta"):
            model = MiniMaxForCausalLM(config)
        model = model.to_empty(device="cpu")
        model.init_weights(seed)
        model = model.to(device=place.device, dtype=place.dtype)
    return NativeBackend(
        model,
        tokenizer,
        spec=f"random:{rest}",
        name=f"{preset} (random weights)",
        info={"random_weights": True, "preset": preset, "seed": seed, **place.info(config)},
        max_context=opts.get("max_context"),
        batch_size=opts.get("batch_size"),
        parallel=place.context,
        chat_template=opts.get("chat_template"),
        system_prompt=opts.get("system_prompt"),
    )


def spec_config(spec: str) -> MiniMaxConfig | None:
    """The config a native model spec names, read without loading weights; None for a spec of another backend."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "random":
        return MiniMaxConfig.from_name(parse_random_spec(rest)[0])
    if sep and prefix == "mmx":
        return MiniMaxConfig.from_pretrained(Path(rest).expanduser())
    if not sep and (WEIGHTS_DIR / spec / "config.json").is_file():
        return MiniMaxConfig.from_pretrained(WEIGHTS_DIR / spec)
    return None


def memory_plan_for(
    spec: str, options: dict[str, Any], length: int, rows: int = 1
) -> tuple[MemoryPlan, int, str] | None:
    """(plan, free bytes, which device) of one rank for a native model with --tp or --quantize-experts, at
    `length` tokens for `rows` rows; None for any other run (which sizes its batches by free memory as it goes)."""
    from mmx.model.parallel.plan import COMM_RESERVE, memory_plan

    tp, quantize = int(options.get("tp") or 1), check_kind(options.get("quantize_experts"))
    config = spec_config(spec) if tp > 1 or quantize else None
    if config is None:  # another backend's spec checks its own options when it loads
        return None
    opts = _check_options(options)
    check_tp(config, tp)
    join(tp, opts.get("device"))  # one process asked for tensor parallel: refused here, before any plan is shown
    device = rank_device(opts.get("device")) if launched() else resolve_device(opts.get("device"))
    elem = torch.finfo(resolve_dtype(opts.get("dtype"), device)).bits // 8
    on_gpu = device.type == "cuda"
    chunk = planned_chunk(config, elem, device)
    plan = memory_plan(
        config,
        length=length,
        dtype_bytes=elem,
        tp=tp,
        quantize=quantize,
        rows=rows,
        chunk=chunk,
        comm_reserve=COMM_RESERVE if on_gpu and tp > 1 else 0,
    )
    ranks_here = 1 if on_gpu else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # CPU ranks share the host's memory
    return plan, free_memory(device) // ranks_here, str(device)


register_backend("name", from_name)
register_backend("mmx", from_path)
register_backend("random", from_random)
