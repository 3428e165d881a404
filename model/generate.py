"""Chunked prefill, one-token decode, greedy generation and continuation log-probabilities.

Prefill feeds a prompt through the cache `chunk_size` tokens at a time, so activations never exceed one chunk however
long the prompt is (only the cache grows with it), and computes logits for the last position only. Chunks end at
multiples of `chunk_size` counted from the start of the sequence, also when the cache already holds a prefix, so a
prompt continued from a shared prefix (`mmx.model.prefix`) is cut where its separate prefill would be. Everything runs
under `no_grad` rather than `inference_mode`, so a cache filled here can be fed to a plain forward afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .cache import ModelCache
from .config import MiniMaxConfig
from .memory import free_memory
from .modeling import MiniMaxForCausalLM

if TYPE_CHECKING:
    from .prefix import PrefixWalker

DEFAULT_CHUNK = 4096  # tokens per prefill step on a CPU (faster there than long chunks), and the shortest on a GPU
MAX_CHUNK = 65536  # `measured_chunk` picks a power of two from DEFAULT_CHUNK up to this
ACTIVATION_SHARE = 0.25  # of the device memory free beside the model, for one prefill chunk's activations
PROBE_TOKENS = 2048  # tokens of the probe chunk `activations_per_token` measures
# Hidden-width vectors alive per token during a layer: residual, norms, q/k/v/gate/out projections, attention output;
# a deliberate over-estimate, used where nothing was measured (a CPU).
ACTIVATION_VECTORS = 24


class GenerationCancelled(Exception):
    """Raised inside a generation whose `GenerationHook` says the caller no longer wants the answer."""


class GenerationHook:
    """How a caller follows and stops a generation between steps (a server streaming tokens to a client, and
    dropping the work when that client leaves): `on_token(row, token_id)` hears each new token as it is chosen, and
    `cancelled()` is asked before every prefill chunk and decode step; when it answers True, the generation raises
    `GenerationCancelled`. Both are cheap calls between steps, never inside one."""

    def __init__(
        self,
        on_token: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.on_token, self.cancelled = on_token, cancelled

    def token(self, row: int, token: int) -> None:
        if self.on_token is not None:
            self.on_token(row, token)

    def check(self) -> None:
        """Raise `GenerationCancelled` if the caller has given up."""
        if self.cancelled is not None and self.cancelled():
            raise GenerationCancelled()


def activation_bytes(config: MiniMaxConfig, elem_bytes: int) -> int:
    """Estimated live activations per token of a prefill chunk: the hidden-width vectors and three expert-width
    vectors per routed expert (logits are kept for the last position only)."""
    width = max(config.hidden_size, config.num_attention_heads * config.head_dim)
    return (ACTIVATION_VECTORS * width + 3 * config.num_experts_per_tok * config.intermediate_size) * elem_bytes


def chunk_for(per_token: float, budget: float) -> int:
    """The largest power of two in [DEFAULT_CHUNK, MAX_CHUNK] tokens whose activations (`per_token` bytes each) fit
    `budget` bytes."""
    chunk = DEFAULT_CHUNK
    while chunk * 2 <= MAX_CHUNK and chunk * 2 * per_token <= budget:
        chunk *= 2
    return chunk


def planned_chunk(config: MiniMaxConfig, elem_bytes: int, device: torch.device) -> int:
    """The chunk `measured_chunk` will pick, estimated before anything is loaded (for the memory plan): on CUDA the
    activation estimate per token against ACTIVATION_SHARE of the memory free now, elsewhere DEFAULT_CHUNK."""
    if device.type != "cuda":
        return DEFAULT_CHUNK
    return chunk_for(activation_bytes(config, elem_bytes), ACTIVATION_SHARE * free_memory(device))


@torch.no_grad()
def activations_per_token(model: MiniMaxForCausalLM, tokens: int = PROBE_TOKENS) -> int:
    """Device bytes a prefill chunk allocates per token beyond what existed before it, measured on CUDA: a probe chunk
    of `tokens` random ids behind a cache already holding as many (the path every chunk but the first takes)."""
    device = model.device
    generator = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, 2 * tokens), device=device, generator=generator)
    cache = model.new_cache(1)
    cache.reserve(2 * tokens)
    model(ids[:, :tokens], cache=cache, logits_to_keep=1)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model(ids[:, tokens:], cache=cache, logits_to_keep=1)
    torch.cuda.synchronize(device)
    return max(1, (torch.cuda.max_memory_allocated(device) - before) // tokens)


def measured_chunk(model: MiniMaxForCausalLM) -> tuple[int, int]:
    """(prefill chunk, activation bytes per token) for `model` where it is. On CUDA the activations are measured
    (`activations_per_token`) and the chunk is the longest whose activations fit ACTIVATION_SHARE of the memory free
    beside the model: long chunks amortise each layer's and each expert's fixed launch cost (a `small` ×8 prefill of
    256k on an H200: 0.68 s in 16k chunks, 0.54 s in 64k). Elsewhere: DEFAULT_CHUNK and the estimate
    (`activation_bytes`); a CPU prefills faster in short chunks (mmx-mini, a 32k prompt: 5.3 s in 4k chunks, 7.3 s
    in 64k)."""
    device = model.device
    if device.type != "cuda":
        return DEFAULT_CHUNK, activation_bytes(model.config, torch.finfo(model.dtype).bits // 8)
    per_token = activations_per_token(model)
    free = torch.cuda.mem_get_info(device)[0]
    return chunk_for(per_token, ACTIVATION_SHARE * free), per_token


@torch.no_grad()
def prefill(
    model: MiniMaxForCausalLM,
    input_ids: torch.Tensor,
    cache: ModelCache,
    chunk_size: int = DEFAULT_CHUNK,
    hook: GenerationHook | None = None,
) -> torch.Tensor:
    """Feed input_ids [B, T] (T ≥ 1) into `cache` in chunks; return the logits after the last token [B, V]. `hook`
    may cancel between chunks.

    Chunks end at the multiples of `chunk_size` of the sequence position (rows of one length) or every `chunk_size`
    tokens of the input (rows of several lengths)."""
    T = input_ids.shape[1]
    if T == 0:
        raise ValueError("prefill needs at least one token")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    cache.reserve(max(cache.lengths) + T)
    held = cache.lengths[0] if len(set(cache.lengths)) == 1 else 0
    logits = None
    start = 0
    while start < T:
        if hook is not None:
            hook.check()
        end = min(T, start + chunk_size - (held + start) % chunk_size)
        logits = model(input_ids[:, start:end], cache=cache, logits_to_keep=1)
        start = end
    return logits[:, -1]  # type: ignore[index]


@torch.no_grad()
def decode_step(model: MiniMaxForCausalLM, tokens: torch.Tensor, cache: ModelCache) -> torch.Tensor:
    """Append one token per row (tokens [B]) and return the next-token logits [B, V]."""
    return model(tokens[:, None], cache=cache)[:, -1]


def _stop_at(tokens: list[int], stop_ids: set[int], stop_sequences: Sequence[Sequence[int]]) -> int | None:
    """Length to cut `tokens` to if its newest token completes a stop id or stop sequence, else None."""
    if tokens[-1] in stop_ids:
        return len(tokens) - 1
    for seq in stop_sequences:
        if seq and len(tokens) >= len(seq) and tokens[-len(seq) :] == list(seq):
            return len(tokens) - len(seq)
    return None


@dataclass
class GenerateStats:
    """What one `generate` call did. Per prompt: tokens its own forward passes computed (`prefilled`) and tokens it
    read from a cache another prompt had filled (`read`); and the seconds until every prompt was prefilled (device
    work included)."""

    prefilled: list[int] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    prefill_s: float = 0.0


def _sync(device: torch.device) -> None:
    """Wait for queued device work, so a host clock read next includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prefill_alone(
    model: MiniMaxForCausalLM,
    prompts: list[list[int]],
    extra: int,
    chunk_size: int,
    hook: GenerationHook | None = None,
) -> tuple[ModelCache, list[torch.Tensor]]:
    """Each prompt prefilled from an empty cache, into one batch cache of len(prompts) rows."""
    cache = model.new_cache(len(prompts))
    cache.reserve(max(len(p) for p in prompts) + extra)
    first = []
    for row, prompt in enumerate(prompts):
        own = cache if len(prompts) == 1 else model.new_cache(1)  # a lone prompt needs no second copy of its K/V
        first.append(prefill(model, torch.tensor([prompt], device=model.device), own, chunk_size, hook))
        if own is not cache:
            cache.load_row(row, own)
    return cache, first


def _prefill_walking(
    model: MiniMaxForCausalLM, prompts: list[list[int]], extra: int, walker: PrefixWalker, stats: GenerateStats
) -> tuple[ModelCache, list[torch.Tensor]]:
    """The prompts fed through `walker` (shared beginnings computed once), each copied into its batch row; a lone
    prompt decodes in the walker's own row."""
    longest = max(len(p) for p in prompts)
    walker.reserve(longest + (extra if len(prompts) == 1 else 0))
    cache = None
    if len(prompts) > 1:
        cache = model.new_cache(len(prompts))
        cache.reserve(longest + extra)
    first: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    for row, fed in walker.walk(prompts):
        first[row] = fed.logits
        stats.read[row], stats.prefilled[row] = fed.read, fed.prefilled
        if cache is not None:
            cache.load_row(row, walker.cache)
    return (cache if cache is not None else walker.lend()), first


@torch.no_grad()
def generate(
    model: MiniMaxForCausalLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int] = (),
    stop_sequences: Sequence[Sequence[int]] = (),
    chunk_size: int = DEFAULT_CHUNK,
    walker: PrefixWalker | None = None,
    stats: GenerateStats | None = None,
    hook: GenerationHook | None = None,
) -> list[list[int]]:
    """Greedy continuations of `prompts` (new tokens only, any stop id or stop sequence excluded).

    Without `walker`, each prompt is prefilled alone; with one, prompts go through it, so beginnings they share with
    each other (or with the prompts it walked before) are prefilled once. Then all rows decode together with their
    own positions and masked K/V lengths, so a batch gives exactly the tokens one-at-a-time generation gives.
    `stats`, when given, is filled in. `hook` hears each token as it is chosen and may cancel between steps.
    """
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    stats = stats if stats is not None else GenerateStats()
    stats.prefilled, stats.read = [len(p) for p in prompts], [0] * len(prompts)
    if not prompts or max_new_tokens <= 0:
        stats.prefilled = [0] * len(prompts)
        return [[] for _ in prompts]
    started = time.perf_counter()
    if walker is None:
        cache, first = _prefill_alone(model, prompts, max_new_tokens, chunk_size, hook)
    else:
        if hook is not None:
            hook.check()
        cache, first = _prefill_walking(model, prompts, max_new_tokens, walker, stats)
    next_tokens = torch.cat(first).argmax(dim=-1)  # [B]
    _sync(model.device)  # the decode loop's first read waits for this anyway
    stats.prefill_s = time.perf_counter() - started
    return _decode(model, cache, next_tokens, len(prompts), max_new_tokens, set(stop_ids), stop_sequences, hook)


class FixedDecoder:
    """Greedy decode steps of one fixed shape (`MiniMaxForCausalLM.decode_fixed`), on CUDA replayed from a graph.

    A decode step of a small model is hundreds of short kernels, and launching them one by one from Python takes
    far longer than running them. The first step runs as such (it also warms up every kernel); it is then captured
    once as a CUDA graph, and every later step is a single replay. Should capturing fail (an operation a graph cannot
    hold), the steps go on without one. Needs the cache's capacity for every step it will take.
    """

    def __init__(self, model: MiniMaxForCausalLM, cache: ModelCache, graphs: bool = True) -> None:
        self.model, self.cache = model, cache
        self.positions = torch.tensor(cache.lengths, device=model.device)  # [B]
        self.tokens: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture = graphs and model.device.type == "cuda"

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """The next tokens [B] after `tokens` [B]."""
        if self.graph is not None:
            self.tokens.copy_(tokens)  # type: ignore[union-attr]
            self.graph.replay()
            next_tokens = self.out
        else:
            self.tokens = tokens.clone()
            next_tokens = self.model.decode_fixed(self.tokens, self.cache, self.positions)
            if self.capture:
                self._capture()
        self.cache.advance(1)
        return next_tokens  # type: ignore[return-value]

    def _capture(self) -> None:
        self.capture = False
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.out = self.model.decode_fixed(self.tokens, self.cache, self.positions)  # recorded, not run
        except Exception:  # noqa: BLE001 - any capture failure: the steps stay eager, and capturing ran none of them
            return
        self.graph = graph


def _decode(
    model: MiniMaxForCausalLM,
    cache: ModelCache,
    next_tokens: torch.Tensor,
    rows: int,
    max_new_tokens: int,
    stops: set[int],
    stop_sequences: Sequence[Sequence[int]],
    hook: GenerationHook | None = None,
) -> list[list[int]]:
    """Greedy steps from the first tokens `next_tokens` [B] until every row stopped or has `max_new_tokens`. On CUDA
    the steps replay a graph (`FixedDecoder`) when there are a few to take; elsewhere each is a plain forward."""
    room = not cache.keys or cache.capacity >= max(cache.lengths) + max_new_tokens
    graphed = model.device.type == "cuda" and max_new_tokens > 2 and room
    step = FixedDecoder(model, cache) if graphed else lambda tokens: decode_step(model, tokens, cache).argmax(dim=-1)
    outputs: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    for taken in range(max_new_tokens):
        for row, token in enumerate(next_tokens.tolist()):
            if done[row]:
                continue
            outputs[row].append(token)
            if hook is not None:
                hook.token(row, token)
            cut = _stop_at(outputs[row], stops, stop_sequences)
            if cut is not None:
                del outputs[row][cut:]
                done[row] = True
        if all(done) or taken == max_new_tokens - 1:
            break
        if hook is not None:
            hook.check()
        next_tokens = step(next_tokens)
    return outputs


@torch.no_grad()
def token_logprobs(
    model: MiniMaxForCausalLM, input_ids: Sequence[int], start: int, chunk_size: int = DEFAULT_CHUNK
) -> tuple[list[float], list[bool]]:
    """For t in [start, len(input_ids)): log p(input_ids[t] | input_ids[:t]) and whether it is the greedy choice.

    The sequence streams through the cache in chunks; logits are kept only for positions that predict a scored token,
    so a long context costs no more memory than a prefill.
    """
    if not 1 <= start <= len(input_ids):
        raise ValueError(f"start must be in 1..{len(input_ids)} (the first token has no prediction), got {start}")
    if start == len(input_ids):
        return [], []
    ids = torch.tensor([list(input_ids)], device=model.device)  # [1, N]
    cache = model.new_cache(1)
    cache.reserve(ids.shape[1])
    logprobs: list[float] = []
    greedy: list[bool] = []
    fed = ids.shape[1] - 1  # the last token predicts nothing
    for begin in range(0, fed, chunk_size):
        end = min(begin + chunk_size, fed)
        keep = end - max(begin, start - 1)  # positions in this chunk whose next token is scored
        logits = model(ids[:, begin:end], cache=cache, logits_to_keep=max(keep, 1))
        if keep <= 0:
            continue
        targets = ids[0, end - keep + 1 : end + 1]  # [keep]
        scores = torch.log_softmax(logits[0, -keep:].float(), dim=-1)  # [keep, V]
        logprobs += scores.gather(1, targets[:, None])[:, 0].tolist()
        greedy += (scores.argmax(dim=-1) == targets).tolist()
    return logprobs, greedy


@torch.no_grad()
def token_scores(
    model: MiniMaxForCausalLM, input_ids: Sequence[int], start: int, top_k: int, chunk_size: int = DEFAULT_CHUNK
) -> list[tuple[float, bool, list[tuple[int, float]]]]:
    """For t in [start, len(input_ids)): (log p(input_ids[t] | input_ids[:t]), whether it is the greedy choice, the
    `top_k` most likely (id, log p) best first) — what an OpenAI-style `logprobs` answer reports. Streams through the
    cache in chunks like `token_logprobs`."""
    if not 1 <= start <= len(input_ids):
        raise ValueError(f"start must be in 1..{len(input_ids)} (the first token has no prediction), got {start}")
    ids = torch.tensor([list(input_ids)], device=model.device)  # [1, N]
    cache = model.new_cache(1)
    cache.reserve(ids.shape[1])
    scores: list[tuple[float, bool, list[tuple[int, float]]]] = []
    fed = ids.shape[1] - 1
    for begin in range(0, fed, chunk_size):
        end = min(begin + chunk_size, fed)
        keep = end - max(begin, start - 1)
        logits = model(ids[:, begin:end], cache=cache, logits_to_keep=max(keep, 1))
        if keep <= 0:
            continue
        targets = ids[0, end - keep + 1 : end + 1]  # [keep]
        logprobs = torch.log_softmax(logits[0, -keep:].float(), dim=-1)  # [keep, V]
        picked = logprobs.gather(1, targets[:, None])[:, 0].tolist()
        greedy = (logprobs.argmax(dim=-1) == targets).tolist()
        if top_k > 0:
            values, indices = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)  # [keep, k]
            tops = [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
        else:
            tops = [[] for _ in picked]
        scores += list(zip(picked, greedy, tops, strict=True))
    return scores
