"""Inference cache: a fp32 recurrent state per lightning layer and growing K/V per softmax layer.

Rows may hold different numbers of tokens (batched decode of prompts of different lengths): each row keeps its own
length, new K/V land at that row's offset, and softmax attention masks keys past a row's own position. Lightning layers
carry no positions, so their [B, H, D, D] states need no masking at all.

A cache can also go back to an earlier position (`rewind`): the K/V of a prefix are a prefix of the K/V, so only the
lightning states need a copy taken at that position (`snapshot`), a fixed size however long the prefix. That is how
prompts sharing a prefix prefill it once (`mmx.model.prefix`).
"""

from __future__ import annotations

import torch
from torch.nn.attention.bias import causal_lower_right

from .config import MiniMaxConfig


class ModelCache:
    """State of `batch_size` sequences after the tokens fed so far (`lengths[b]` tokens in row b)."""

    def __init__(
        self,
        config: MiniMaxConfig,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        self.batch_size = batch_size
        self.lengths = [0] * batch_size
        self.device = torch.device(device)
        H, D, KV = config.num_attention_heads, config.head_dim, config.num_key_value_heads
        self.states = {
            i: torch.zeros(batch_size, H, D, D, dtype=torch.float32, device=self.device)  # [B, H, D, D]
            for i in config.lightning_layers
        }
        self.keys = {
            i: torch.zeros(batch_size, 0, KV, D, dtype=dtype, device=self.device) for i in config.softmax_layers
        }
        self.values = {i: k.clone() for i, k in self.keys.items()}

    @property
    def capacity(self) -> int:
        """Tokens per row the K/V buffers hold before they must grow."""
        return next(iter(self.keys.values())).shape[1] if self.keys else 0

    def reserve(self, tokens: int) -> None:
        """Make room for `tokens` per row in one allocation (callers that know the final length avoid regrowth)."""
        if tokens <= self.capacity:
            return
        for store in (self.keys, self.values):
            for i, old in store.items():
                new = old.new_zeros(old.shape[0], tokens, *old.shape[2:])  # [B, tokens, KV, D]
                new[:, : old.shape[1]] = old
                store[i] = new

    def positions(self, steps: int) -> torch.Tensor:
        """Absolute positions of the next `steps` tokens: [1, steps] when all rows are aligned, else [B, steps]."""
        offsets = torch.arange(steps, device=self.device)
        if len(set(self.lengths)) <= 1:
            return (offsets + self.lengths[0])[None]  # [1, steps]
        start = torch.tensor(self.lengths, device=self.device)
        return start[:, None] + offsets[None]  # [B, steps]

    def attention_mask(self, steps: int) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for SDPA when `steps` new queries attend to everything cached plus themselves."""
        total = max(self.lengths) + steps
        if len(set(self.lengths)) <= 1:
            if total == steps:
                return None, True
            if steps == 1:
                return None, False
            return causal_lower_right(steps, total), False  # lazy: never materialised on the flash path
        start = torch.tensor(self.lengths, device=self.device)
        query_pos = start[:, None] + torch.arange(steps, device=self.device)[None]  # [B, steps]
        key_pos = torch.arange(total, device=self.device)
        return key_pos[None, None, :] <= query_pos[:, :, None], False  # [B, steps, total]

    def append_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, T, KV, D] after each row's tokens; return the keys and values to attend [B, S, KV, D]."""
        T = k.shape[1]
        total = max(self.lengths) + T
        if total > self.capacity:
            self.reserve(max(total, 2 * self.capacity))
        keys, values = self.keys[layer], self.values[layer]
        if len(set(self.lengths)) <= 1:
            start = self.lengths[0]
            keys[:, start : start + T] = k
            values[:, start : start + T] = v
        else:
            for b, start in enumerate(self.lengths):
                keys[b, start : start + T] = k[b]
                values[b, start : start + T] = v[b]
        return keys[:, :total], values[:, :total]

    def write_kv_at(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one token's k, v [B, 1, KV, D] at each row's position ([B] on the device, so the write needs no
        host-side length); return the whole buffers [B, capacity, KV, D] (a fixed-shape decode step masks them)."""
        rows = torch.arange(k.shape[0], device=k.device)
        self.keys[layer][rows, positions] = k[:, 0]
        self.values[layer][rows, positions] = v[:, 0]
        return self.keys[layer], self.values[layer]

    def advance(self, steps: int) -> None:
        """Count `steps` more tokens in every row (called once per forward, after all layers stored theirs)."""
        self.lengths = [n + steps for n in self.lengths]

    def snapshot(self) -> dict[int, torch.Tensor]:
        """Copies of the lightning states now: with the current length, everything `rewind` needs to come back here."""
        return {i: state.clone() for i, state in self.states.items()}

    def rewind(self, length: int, states: dict[int, torch.Tensor] | None) -> None:
        """Go back to `length` tokens in every row, with the lightning states a `snapshot` took there (None: the
        empty cache, so `length` must be 0). K/V past `length` stay allocated and are overwritten by what follows."""
        if states is None and length != 0:
            raise ValueError(f"rewinding to {length} tokens needs the lightning states taken there")
        if length > min(self.lengths):
            raise ValueError(f"cannot rewind to {length} tokens: a row holds only {min(self.lengths)}")
        for i, state in self.states.items():
            self.states[i] = states[i].clone() if states is not None else torch.zeros_like(state)
        self.lengths = [length] * self.batch_size

    def load_row(self, row: int, other: ModelCache) -> None:
        """Copy a one-row cache into `row` (generation prefills each prompt alone, then decodes them together)."""
        if other.batch_size != 1:
            raise ValueError(f"load_row takes a one-row cache, got {other.batch_size} rows")
        n = other.lengths[0]
        self.reserve(n)
        for i, state in other.states.items():
            self.states[i][row] = state[0]
        for i in self.keys:
            self.keys[i][row, :n] = other.keys[i][0, :n]
            self.values[i][row, :n] = other.values[i][0, :n]
        self.lengths[row] = n
