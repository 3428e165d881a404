"""Chunked prefill, one-token decode, greedy generation and continuation log-probabilities.

Prefill feeds a prompt through the cache `chunk_size` tokens at a time, so activations never exceed one chunk however
long the prompt is (only the cache grows with it), and computes logits for the last position only. Everything runs
under `no_grad` rather than `inference_mode`, so a cache filled here can be fed to a plain forward afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .cache import ModelCache
from .config import MiniMaxConfig
from .modeling import MiniMaxForCausalLM

DEFAULT_CHUNK = 4096  # tokens per prefill step: large enough to keep a GPU busy, small enough to bound activations
MAX_CHUNK = 65536  # `auto_chunk` picks a power of two from DEFAULT_CHUNK up to this
ACTIVATION_BUDGET = 2 * 2**30  # bytes of live activations an automatic prefill chunk may plan for
# Hidden-width vectors alive per token during a layer: residual, norms, q/k/v/gate/out projections, attention output;
# a deliberate over-estimate, since an out-of-memory costs more than a smaller chunk.
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
    """Live activations per token of a prefill chunk: the hidden-width vectors and three expert-width vectors per
    routed expert (logits are kept for the last position only)."""
    width = max(config.hidden_size, config.num_attention_heads * config.head_dim)
    return (ACTIVATION_VECTORS * width + 3 * config.num_experts_per_tok * config.intermediate_size) * elem_bytes


def auto_chunk(config: MiniMaxConfig, elem_bytes: int) -> int:
    """The largest power of two in [DEFAULT_CHUNK, MAX_CHUNK] tokens whose activations fit ACTIVATION_BUDGET.

    Small models take long chunks, which amortise the fixed launch cost of every layer and expert per chunk (a
    `small` ×8 prefill of 256k on an H200: 0.68 s in 16k chunks, 0.54 s in 64k); wide ones keep short chunks, so a
    25B-parameter slice prefills 1M tokens with about a gigabyte of activations beside its weights.
    """
    per_token = activation_bytes(config, elem_bytes)
    chunk = DEFAULT_CHUNK
    while chunk * 2 <= MAX_CHUNK and chunk * 2 * per_token <= ACTIVATION_BUDGET:
        chunk *= 2
    return chunk


@torch.no_grad()
def prefill(
    model: MiniMaxForCausalLM,
    input_ids: torch.Tensor,
    cache: ModelCache,
    chunk_size: int = DEFAULT_CHUNK,
    hook: GenerationHook | None = None,
) -> torch.Tensor:
    """Feed input_ids [B, T] (T ≥ 1) into `cache` in chunks; return the logits after the last token [B, V]. `hook`
    may cancel between chunks."""
    if input_ids.shape[1] == 0:
        raise ValueError("prefill needs at least one token")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    cache.reserve(max(cache.lengths) + input_ids.shape[1])
    logits = None
    for start in range(0, input_ids.shape[1], chunk_size):
        if hook is not None:
            hook.check()
        logits = model(input_ids[:, start : start + chunk_size], cache=cache, logits_to_keep=1)
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


@torch.no_grad()
def generate(
    model: MiniMaxForCausalLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int] = (),
    stop_sequences: Sequence[Sequence[int]] = (),
    chunk_size: int = DEFAULT_CHUNK,
    hook: GenerationHook | None = None,
) -> list[list[int]]:
    """Greedy continuations of `prompts` (new tokens only, any stop id or stop sequence excluded).

    Each prompt is prefilled alone, then all rows decode together with their own positions and masked K/V lengths,
    so a batch gives exactly the tokens one-at-a-time generation gives. `hook` hears each token as it is chosen and
    may cancel between steps.
    """
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if not prompts or max_new_tokens <= 0:
        return [[] for _ in prompts]
    device = model.device
    cache = model.new_cache(len(prompts))
    cache.reserve(max(len(p) for p in prompts) + max_new_tokens)
    first = []
    for row, prompt in enumerate(prompts):
        own = cache if len(prompts) == 1 else model.new_cache(1)  # a lone prompt needs no second copy of its K/V
        first.append(prefill(model, torch.tensor([prompt], device=device), own, chunk_size, hook))
        if own is not cache:
            cache.load_row(row, own)
    next_tokens = torch.cat(first).argmax(dim=-1)  # [B]
    outputs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    stops = set(stop_ids)
    for step in range(max_new_tokens):
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
        if all(done) or step == max_new_tokens - 1:
            break
        if hook is not None:
            hook.check()
        next_tokens = decode_step(model, next_tokens, cache).argmax(dim=-1)
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
