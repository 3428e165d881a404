"""Softmax attention of a prefill chunk that follows cached keys: exact, on the fastest fused kernel available.

In a chunked prefill the chunk's T queries sit at positions P … P+T−1 behind P cached keys: each query sees every
cached key and, causally, the chunk's own keys (a lower-right causal mask over P+T keys). Two ways to compute it:

- `masked`: one SDPA call with torch's lower-right `CausalBias`. On CUDA torch sends that mask straight to its
  FlashAttention-2 kernel (cuDNN's kernel never sees it); on the CPU it materialises the [T, P+T] mask.
- `split`: the cached part (T × P, no mask at all) and the chunk's causal square (T × T) as separate kernel calls,
  merged exactly through their log-sum-exps, the rescaling flash attention itself applies between key blocks. Each
  call goes to the first usable kernel of `KERNEL_ORDER`: cuDNN's Hopper kernel is the fastest on long unmasked
  keys. Without a mask, grouped-query heads fold into query rows, so no kernel ever needs repeated K/V there.

`prefill_path(name)` picks the path for the code inside it (a context variable, like `sdpa_kernel`), so one process
can time both on the same model; `DEFAULT_PREFILL_PATH` is the path used everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPAParams
from torch.nn.attention.bias import causal_lower_right

PREFILL_PATHS = ("split", "masked")
DEFAULT_PREFILL_PATH = "split"  # measured faster on the CPU and on an H200: README, bench section
KERNEL_ORDER = ("cudnn", "flash", "efficient", "cpu")
CUDNN_KEY_BLOCK = 65536  # cuDNN builds an execution plan per shape (tens of ms): cached keys go in few distinct sizes
MIN_KEY_PIECE = 1024  # below this, the rest of a key range is one call of its own size

_PATH: ContextVar[str] = ContextVar("mmx_prefill_path", default=DEFAULT_PREFILL_PATH)

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool, float], tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def prefill_path(name: str) -> Iterator[None]:
    """Compute chunked-prefill attention through path `name` (one of PREFILL_PATHS) inside the block."""
    if name not in PREFILL_PATHS:
        raise ValueError(f"unknown prefill attention path {name!r}; use one of {', '.join(PREFILL_PATHS)}")
    token = _PATH.set(name)
    try:
        yield
    finally:
        _PATH.reset(token)


def current_prefill_path() -> str:
    """The path chunk_attention takes here."""
    return _PATH.get()


# ------------------------------------------------------------------------------------------------------ kernels
# Each takes q [B, h, Tq, D], k/v [B, hk, S, D] and returns (o [B, h, Tq, D], lse [B, h, Tq]): the natural-log
# log-sum-exp of each query's scaled scores, fp32 (fp64 for fp64 inputs on the CPU). `causal` is only ever asked for
# square blocks (Tq = S), where every kernel's notion of the causal diagonal agrees.


def _cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    q, k, v = _packed_batch_stride(q), _packed_batch_stride(k), _packed_batch_stride(v)
    out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=scale)
    return out[0], out[1].reshape(q.shape[:3])  # lse comes as [B, h, Tq, 1] (or [B, h, Tq] in older torch)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
    return out[0], out[1]


def _efficient(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal, scale=scale)
    return out[0], out[1][..., : q.shape[2]]  # lse rows are padded to a multiple of 32


def _cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return out[0], out[1]


def _packed_batch_stride(x: torch.Tensor) -> torch.Tensor:
    """A one-row view of x whose batch stride is that of a packed tensor of its shape. cuDNN keys its plans on strides
    as well as shapes, and a row sliced from the cache has a batch stride set by the cache's capacity, which would
    cost a new plan for every prompt length."""
    if x.shape[0] != 1:
        return x
    extent = max(size * stride for size, stride in zip(x.shape[1:], x.stride()[1:], strict=True))
    return x.as_strided(x.shape, (extent, *x.stride()[1:]))


def _cuda_check(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], bool]:
    """torch's own test of whether its `name` kernel takes these inputs (shape, dtype, layout, GPU, enabled flags)."""
    can_use = getattr(torch.backends.cuda, f"can_use_{name}_attention", None)

    def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
        if can_use is None or not q.is_cuda:
            return False
        return bool(can_use(SDPAParams(q, k, v, None, 0.0, causal, q.shape[1] != k.shape[1])))

    return check


_torch_cudnn_check = _cuda_check("cudnn")


def _cudnn_check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    """torch's test, on lengths that are multiples of 128 only: cuDNN before 9.15.1 mishandles others, which is why
    torch itself prefers cuDNN only from that version on."""
    return q.shape[2] % 128 == 0 and k.shape[2] % 128 == 0 and _torch_cudnn_check(q, k, v, causal)


def _cpu_check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    return q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Kernel:
    """A fused attention kernel that returns its log-sum-exp."""

    name: str
    attend: Attend
    usable: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], bool]
    grouped: bool  # takes fewer K/V heads than query heads (grouped-query attention) without repeating them
    blocked: bool  # builds a plan per shape: cached keys come in `key_pieces` blocks, not in one call of any length


KERNELS = {
    "cudnn": Kernel("cudnn", _cudnn, _cudnn_check, grouped=False, blocked=True),
    "flash": Kernel("flash", _flash, _cuda_check("flash"), grouped=True, blocked=False),
    "efficient": Kernel("efficient", _efficient, _cuda_check("efficient"), grouped=False, blocked=False),
    "cpu": Kernel("cpu", _cpu, _cpu_check, grouped=True, blocked=False),
}


def _pick(order: Sequence[str], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> Kernel | None:
    return next((KERNELS[n] for n in order if KERNELS[n].usable(q, k, v, causal)), None)


# -------------------------------------------------------------------------------------------------------- paths


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, T, H, D] after S − T cached keys, k/v [B, S, KV, D] (S ≥ T) -> [B, T, H, D]; query t sees keys
    0 … S − T + t; scale 1/√D. Through the current prefill path."""
    if current_prefill_path() == "split":
        return split_attention(q, k, v)
    return masked_attention(q, k, v)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One SDPA call with the lower-right causal mask (shapes as chunk_attention)."""
    T, S = q.shape[1], k.shape[1]
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=causal_lower_right(T, S), enable_gqa=True
    )  # [B, H, T, D]
    return o.transpose(1, 2)


def split_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    order: Sequence[str] = KERNEL_ORDER,
    key_block: int = CUDNN_KEY_BLOCK,
) -> torch.Tensor:
    """Cached keys unmasked plus the chunk's causal square, each on the first usable kernel of `order`, merged by
    log-sum-exp (shapes as chunk_attention); `key_block` is the block of cached keys a blocked kernel gets per call.
    Where no kernel of `order` takes a part, the whole chunk goes through masked_attention."""
    B, T, H, D = q.shape
    S, KV = k.shape[1], k.shape[2]
    P = S - T
    scale = D**-0.5
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D], [B, KV, S, D]
    # Without a mask, the G = H / KV query heads that share key head j are just more query rows for it (row g·T + t),
    # laid out [B, G·T, KV, D] in memory like the model's own tensors.
    G = H // KV
    q_rows = q.reshape(B, T, KV, G, D).permute(0, 3, 1, 2, 4)  # [B, G, T, KV, D]
    q_rows = q_rows.reshape(B, G * T, KV, D).transpose(1, 2)  # [B, KV, G·T, D]
    calls = _cached_key_calls(order, q_rows, kh[:, :, :P], vh[:, :, :P], key_block)
    if any(kernel is None for kernel, _, _ in calls):
        return masked_attention(q, k, v)
    square = _square(order, qh, kh[:, :, P:], vh[:, :, P:], scale)
    if square is None:
        return masked_attention(q, k, v)
    o, lse = square  # [B, H, T, D], [B, H, T]
    acc = o.to(torch.promote_types(q.dtype, torch.float32)).unflatten(1, (KV, G))  # [B, KV, G, T, D], the running merge
    lse = lse.unflatten(1, (KV, G))  # [B, KV, G, T]
    for kernel, a, b in calls:
        o_rows, lse_rows = kernel.attend(q_rows, kh[:, :, a:b], vh[:, :, a:b], False, scale)  # [B, KV, G·T, (D)]
        lse = _merge(acc, lse, o_rows.unflatten(2, (G, T)), lse_rows.unflatten(2, (G, T)))  # rows back to heads
    return acc.flatten(1, 2).to(q.dtype).transpose(1, 2)  # [B, T, H, D]


def _cached_key_calls(
    order: Sequence[str], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_block: int
) -> list[tuple[Kernel | None, int, int]]:
    """(kernel, first key, end key) per call over the cached keys k/v [B, KV, P, D]: each block of `key_pieces` on
    the first kernel that takes it, neighbours on the same unblocked kernel joined into one call. None: none fits."""
    calls: list[tuple[Kernel | None, int, int]] = []
    for a, b in key_pieces(k.shape[2], key_block):
        kernel = _pick(order, q, k[:, :, a:b], v[:, :, a:b], False)
        if calls and kernel is not None and kernel is calls[-1][0] and not kernel.blocked:
            calls[-1] = (kernel, calls[-1][1], b)
        else:
            calls.append((kernel, a, b))
    return calls


def _square(
    order: Sequence[str], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Causal attention of the chunk to itself (q [B, H, T, D], k/v [B, KV, T, D]) on the first usable kernel;
    K/V heads are repeated for kernels without grouped-query support. None when no kernel fits."""
    groups = q.shape[1] // k.shape[1]
    repeated = None
    for name in order:
        kernel = KERNELS[name]
        kk, vv = k, v
        if groups > 1 and not kernel.grouped:
            if repeated is None:  # head h = j·G + g reads key head j; [B, T, H, D] in memory, as q
                repeated = tuple(x.transpose(1, 2).repeat_interleave(groups, dim=2).transpose(1, 2) for x in (k, v))
            kk, vv = repeated
        if kernel.usable(q, kk, vv, True):
            return kernel.attend(q, kk, vv, True, scale)
    return None


def _merge(acc: torch.Tensor, lse: torch.Tensor, o: torch.Tensor, lse_o: torch.Tensor) -> torch.Tensor:
    """Fold a part (o over some keys, its log-sum-exp) into the running output `acc` in place; return the new
    log-sum-exp. Each side is weighted by its share of the softmax mass: exp(lse_side − lse_both)."""
    both = torch.logaddexp(lse, lse_o)
    acc.mul_(torch.exp(lse - both).unsqueeze(-1)).addcmul_(o, torch.exp(lse_o - both).unsqueeze(-1))
    return both


def key_pieces(length: int, block: int, min_piece: int = MIN_KEY_PIECE) -> list[tuple[int, int]]:
    """Cover [0, length) with full blocks, then powers of two down to `min_piece`, then the rest in one piece.

    Successive chunks of a prefill (a multiple of the chunk size apart) then meet a handful of call shapes, not one per
    chunk: with 4096-token chunks, 65536-key blocks give five shapes for any prompt length.
    """
    pieces, start = [], 0
    while length - start >= block:
        pieces.append((start, start + block))
        start += block
    size = block // 2
    while length - start >= min_piece and size >= min_piece:
        if length - start >= size:
            pieces.append((start, start + size))
            start += size
        size //= 2
    if start < length:
        pieces.append((start, length))
    return pieces
