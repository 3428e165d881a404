"""The memory plan: what one rank holds for a run at a given context length, counted before anything is loaded.

Weights (the rank's heads, experts and vocabulary rows, experts at 8 bits when quantized), the cache at the asked
length (K/V per softmax layer, fp32 states per lightning layer) for every row a batch holds, and the activations of
one prefill chunk. Weights and cache are exact — a test compares them with the bytes a CPU run allocates — and the
activations are a deliberate over-estimate (`mmx.model.generate.activation_bytes`). A run whose plan exceeds the
device's free memory is refused before loading, with the longest length that would fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmx.errors import MmxError
from mmx.model.config import MiniMaxConfig
from mmx.model.generate import activation_bytes
from mmx.model.parallel.layout import ShardLayout
from mmx.model.parallel.quant import storage_bytes
from mmx.sizes import format_size

GB = 1e9
COMM_RESERVE = 512 * 2**20  # NCCL's buffers beside a tensor-parallel model on GPUs (outside torch's allocator)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per rank by item (`items`), for `rows` sequences of `length` tokens on `tp` ranks."""

    config: MiniMaxConfig
    tp: int
    dtype_bytes: int
    quantize: str | None
    length: int
    rows: int
    chunk: int
    comm_reserve: int = 0
    items: dict[str, int] = field(default_factory=dict)

    @property
    def weights(self) -> int:
        return sum(v for k, v in self.items.items() if k.startswith("weights"))

    @property
    def cache(self) -> int:
        return self.items["K/V"] + self.items["lightning states"]

    @property
    def total(self) -> int:
        return sum(self.items.values())

    def lines(self) -> list[str]:
        """The plan as a few aligned lines, for the terminal."""
        experts = f"{self.quantize} experts" if self.quantize else "experts in the model dtype"
        head = (
            f"memory plan per rank: tp {self.tp}, {experts}, {self.rows} row(s) of {format_size(self.length)} tokens, "
            f"prefill chunk {format_size(self.chunk)}"
        )
        width = max(len(k) for k in self.items)
        body = [f"  {name:<{width}}  {_bytes(value)}" for name, value in self.items.items()]
        return [head, *body, f"  {'total':<{width}}  {_bytes(self.total)}"]

    def summary(self) -> str:
        """One line: the total and its three parts."""
        activations = self.total - self.weights - self.cache
        return (
            f"{_bytes(self.total).strip()} per rank at {format_size(self.length)} tokens (weights "
            f"{_bytes(self.weights).strip()}, cache {_bytes(self.cache).strip()}, activations and buffers "
            f"{_bytes(activations).strip()})"
        )

    def check(self, capacity: int, where: str) -> None:
        """One MmxError when the plan exceeds `capacity` bytes (what `where` has free), naming what would fit."""
        if self.total <= capacity:
            return
        fits = longest_fitting(self, capacity)
        remedies = ["more ranks (--tp)"] + (["8-bit experts (--quantize-experts fp8)"] if self.quantize is None else [])
        if self.rows > 1:
            remedies.append("fewer rows (--batch-size)")
        where_fits = f"lengths up to {format_size(fits)} fit" if fits else "no length fits"
        raise MmxError(
            f"the model does not fit: {self.summary()}, but {where} has {capacity / GB:.1f} GB free",
            f"{where_fits} as it is; otherwise use {' or '.join(remedies)}",
        )


def _bytes(value: int) -> str:
    """9.2 wide: GB from one gigabyte up, MB below (a test preset's plan is all megabytes)."""
    return f"{value / GB:9.2f} GB" if value >= GB else f"{value / 1e6:9.2f} MB"


def _attention_weights(config: MiniMaxConfig, layout: ShardLayout) -> int:
    """Elements of one rank's attention weights over all layers."""
    h, D = config.hidden_size, config.head_dim
    H, KV = len(layout.heads), len(layout.kv_heads)
    lightning = H * D * (3 * h) + H * D * h + h * H * D + H * D  # qkv_proj, output_gate, out_proj, norm
    softmax = H * D * h + 2 * KV * D * h + h * H * D  # q, k, v, o
    return len(config.lightning_layers) * lightning + len(config.softmax_layers) * softmax


def memory_plan(
    config: MiniMaxConfig,
    *,
    length: int,
    dtype_bytes: int,
    tp: int = 1,
    quantize: str | None = None,
    rows: int = 1,
    chunk: int = 4096,
    comm_reserve: int = 0,
) -> MemoryPlan:
    """The per-rank plan for `rows` sequences of `length` tokens, prefilled `chunk` tokens at a time."""
    layout = ShardLayout(config, 0, tp)
    h, D, I = config.hidden_size, config.head_dim, config.intermediate_size
    H, KV = len(layout.heads), len(layout.kv_heads)
    L, experts = config.num_hidden_layers, len(layout.experts)
    expert_bytes = storage_bytes(quantize, dtype_bytes)
    scales = experts * (2 * I + h) * 4 if quantize else 0  # one fp32 scale per output row of w1, w3, w2
    # int8 (and fp8 without a scaled matmul) multiply by a dequantized copy of one expert matrix at a time
    dequantized = I * h * dtype_bytes if quantize else 0
    tokens = min(chunk, length)
    local = layout.local_config()
    items = {
        "weights: experts": L * experts * 3 * h * I * expert_bytes + L * scales,
        "weights: attention": _attention_weights(config, layout) * dtype_bytes,
        "weights: embeddings, lm_head": 2 * layout.vocab_rows * h * dtype_bytes,
        "weights: routers, norms": (L * (config.num_local_experts * h + 2 * h) + h) * dtype_bytes,
        "K/V": len(config.softmax_layers) * 2 * rows * length * KV * D * dtype_bytes,
        "lightning states": len(config.lightning_layers) * rows * H * D * D * 4,
        "activations (one prefill chunk)": tokens * activation_bytes(local, dtype_bytes) + dequantized,
        "logits": 2 * rows * config.vocab_size * 4,
    }
    if comm_reserve:
        items["communication buffers"] = comm_reserve
    return MemoryPlan(config, tp, dtype_bytes, quantize, length, rows, chunk, comm_reserve, items)


def longest_fitting(plan: MemoryPlan, capacity: int) -> int | None:
    """The longest power-of-two length from 4k whose plan (otherwise the same) fits `capacity`, or None."""
    best, length = None, 4096
    while length <= plan.config.max_position_embeddings:
        trial = memory_plan(
            plan.config,
            length=length,
            dtype_bytes=plan.dtype_bytes,
            tp=plan.tp,
            quantize=plan.quantize,
            rows=plan.rows,
            chunk=plan.chunk,
            comm_reserve=plan.comm_reserve,
        )
        if trial.total > capacity:
            break
        best, length = length, length * 2
    return best
