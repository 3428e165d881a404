"""The work a prefill or a decode step must do, counted from a MiniMaxConfig: FLOPs for MFU, bytes for bandwidth.

Both are floors, not measurements: FLOPs count the matmuls the architecture needs (the model's own
`flops_per_token`), and bytes count each weight, cache entry and state read once (written once where it changes),
so achieved rate / peak says how far an implementation sits from the hardware.
"""

from __future__ import annotations

from mmx.model.config import MiniMaxConfig


def lm_head_flops(config: MiniMaxConfig) -> float:
    """FLOPs of the output projection for one position."""
    return 2.0 * config.hidden_size * config.vocab_size


def prefill_flops(config: MiniMaxConfig, tokens: int) -> float:
    """Forward FLOPs of a causal prefill of `tokens` tokens (batch 1) that keeps logits for the last position only.

    Token t attends to t keys, so the mean softmax context is (tokens + 1) / 2; `flops_per_token` counts the lm_head
    for every token, which a prefill runs once.
    """
    per_token = config.flops_per_token((tokens + 1) / 2) - lm_head_flops(config)
    return tokens * per_token + lm_head_flops(config)


def expected_experts(config: MiniMaxConfig, batch_size: int) -> float:
    """Distinct experts one layer reads for `batch_size` tokens when routing is uniform (each token picks k of E)."""
    E, k = config.num_local_experts, config.num_experts_per_tok
    return E * (1.0 - (1.0 - k / E) ** batch_size)


def decode_bytes(
    config: MiniMaxConfig, context: int, batch_size: int, weight_bytes: int, expert_bytes: int | None = None
) -> float:
    """Bytes one decode step must move for `batch_size` rows with `context` tokens already cached.

    Weights: every attention matrix, the router, the lm_head and the experts the batch is expected to route to
    (embedding rows are negligible). Cache: softmax K and V for context + 1 positions, read once; lightning states,
    fp32 [H, D, D] per row and layer, read and written. `weight_bytes` is the element size of weights and K/V,
    `expert_bytes` that of the experts when they differ (8-bit experts: 1).
    """
    h, H, D, KV = config.hidden_size, config.num_attention_heads, config.head_dim, config.num_key_value_heads
    lightning_weights = h * 3 * H * D + h * H * D + H * D * h  # qkv_proj, output_gate, out_proj
    softmax_weights = h * H * D + 2 * h * KV * D + H * D * h  # q, k, v, o
    n_lin, n_soft = len(config.lightning_layers), len(config.softmax_layers)
    expert = 3 * h * config.intermediate_size
    routed = config.num_hidden_layers * expected_experts(config, batch_size) * expert
    routers = config.num_hidden_layers * h * config.num_local_experts
    weights = n_lin * lightning_weights + n_soft * softmax_weights + routers + h * config.vocab_size
    kv_cache = n_soft * batch_size * (context + 1) * KV * D * 2
    states = n_lin * batch_size * H * D * D * 4 * 2  # fp32, read and written
    experts_moved = routed * (weight_bytes if expert_bytes is None else expert_bytes)
    return (weights + kv_cache) * weight_bytes + experts_moved + states
