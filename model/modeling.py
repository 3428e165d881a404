"""MiniMax-Text-01 in PyTorch: hybrid lightning / softmax attention, top-2 MoE, DeepNorm-style post-norm residuals.

Module and parameter names follow the original checkpoint (`model.layers.{i}.self_attn.qkv_proj.weight`,
`...block_sparse_moe.experts.{e}.w1.weight`, …), so an original-layout state dict loads without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import CausalBias, CausalVariant

from mmx.errors import MmxError
from mmx.kernels import lightning_attn, lightning_decode
from mmx.kernels.slopes import minimax_slopes

from .cache import ModelCache
from .checkpoint import default_device_dtype, read_state, write_checkpoint
from .chunk_attention import chunk_attention
from .config import LIGHTNING, MiniMaxConfig

LIGHTNING_NORM_EPS = 1e-6  # the original code's eps for the joint H·D output norm (rms_norm_eps is for the others)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 and scaled in the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class DeviceConstant:
    """A fp32 tensor computed once on the CPU and copied once per device.

    Kept outside the module's buffers on purpose: `.to(torch.bfloat16)` would round decay slopes and RoPE frequencies,
    and a model built on the meta device would leave buffers empty. These are functions of the config, not weights.
    """

    def __init__(self, values: torch.Tensor) -> None:
        self._cpu = values.to(device="cpu", dtype=torch.float32)
        self._copies: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._copies:
            self._copies[device] = self._cpu.to(device)
        return self._copies[device]


def lightning_slopes(num_heads: int, layer: int, num_layers: int) -> torch.Tensor:
    """Decay rates [H] of layer `layer` (fp32, on the CPU): `mmx.kernels.slopes.minimax_slopes`."""
    return minimax_slopes(num_heads, layer, num_layers)


def rope_inverse_frequencies(rotary_dim: int, theta: float) -> torch.Tensor:
    """NeoX RoPE frequencies for the first `rotary_dim` channels of a head: θ^(-2i/rotary_dim)."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device="cpu") / rotary_dim
    return 1.0 / (theta**exponents)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2·cos.shape[-1] channels of x [B, T, H, D] (NeoX half-rotation); the rest pass through."""
    half = cos.shape[-1]
    x1, x2 = x[..., :half].float(), x[..., half : 2 * half].float()  # [B, T, H, half] each
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    return torch.cat((rotated, x[..., 2 * half :]), dim=-1)


@dataclass
class ForwardContext:
    """What every layer of one forward shares: RoPE angles, the cache, packing, and the softmax mask."""

    cos: torch.Tensor  # [B or 1, T, 1, rotary_dim / 2] fp32
    sin: torch.Tensor
    cache: ModelCache | None
    cu_seqlens: torch.Tensor | None
    attn_mask: torch.Tensor | None
    is_causal: bool
    positions: torch.Tensor | None = None  # [B] on the device: a fixed-shape decode step (`decode_fixed`)


class LightningAttention(nn.Module):
    """Linear attention with per-head exponential decay; state S_t = λ S_{t−1} + k_tᵀ v_t, output o_t = q_t S_t."""

    def __init__(self, config: MiniMaxConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        inner = self.num_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * inner, bias=False)
        self.output_gate = nn.Linear(config.hidden_size, inner, bias=False)
        self.out_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.norm = RMSNorm(inner, LIGHTNING_NORM_EPS)
        self.slope = DeviceConstant(lightning_slopes(self.num_heads, layer, config.num_hidden_layers))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, T, _ = x.shape
        H, D = self.num_heads, self.head_dim
        slope = self.slope.on(x.device)
        qkv = F.silu(self.qkv_proj(x)).view(B, T, H, 3 * D)  # [B, T, H, 3D], per head [q_h | k_h | v_h]
        q, k, v = qkv.split(D, dim=-1)  # [B, T, H, D] each
        if ctx.cache is None:
            o, _ = lightning_attn(q, k, v, slope, cu_seqlens=ctx.cu_seqlens)
        elif T == 1:
            state = ctx.cache.states[self.layer]  # [B, H, D, D] fp32, updated in place
            o = lightning_decode(q[:, 0], k[:, 0], v[:, 0], slope, state)[:, None]  # [B, 1, H, D]
        else:
            state = ctx.cache.states[self.layer]
            o, ctx.cache.states[self.layer] = lightning_attn(
                q, k, v, slope, initial_state=state, output_final_state=True
            )
        o = self.norm(o.reshape(B, T, H * D))  # joint norm over all heads' channels
        return self.out_proj(torch.sigmoid(self.output_gate(x)) * o)


class SoftmaxAttention(nn.Module):
    """Causal GQA softmax attention with partial RoPE, through SDPA (the flash path on GPU)."""

    def __init__(self, config: MiniMaxConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, T, _ = x.shape
        q = apply_rope(self.q_proj(x).view(B, T, self.num_heads, self.head_dim), ctx.cos, ctx.sin)  # [B, T, H, D]
        k = apply_rope(self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim), ctx.cos, ctx.sin)  # [B, T, KV, D]
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)  # [B, T, KV, D]
        if ctx.cu_seqlens is not None:  # packed documents: causal attention within each, nothing across
            bounds = ctx.cu_seqlens.tolist()
            o = torch.cat(
                [
                    _sdpa(q[:, a:b], k[:, a:b], v[:, a:b], None, True)
                    for a, b in zip(bounds[:-1], bounds[1:], strict=True)
                ],
                dim=1,
            )
        else:
            if ctx.positions is not None:  # written at each row's position; every buffered key, the later masked
                k, v = ctx.cache.write_kv_at(self.layer, k, v, ctx.positions)  # [B, capacity, KV, D]
            elif ctx.cache is not None:
                k, v = ctx.cache.append_kv(self.layer, k, v)  # [B, S, KV, D]
            o = _sdpa(q, k, v, ctx.attn_mask, ctx.is_causal)
        return self.o_proj(o.reshape(B, T, self.num_heads * self.head_dim))


_DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
) -> torch.Tensor:
    """q [B, T, H, D], k/v [B, S, KV, D] -> [B, T, H, D]; scale 1/√D; a boolean `mask` is [B, T, S] (True = attend)."""
    if isinstance(mask, CausalBias) and mask.variant == CausalVariant.LOWER_RIGHT:  # a prefill chunk behind a cache
        return chunk_attention(q, k, v)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask[:, None]  # [B, 1, T, S]
    B, T, H, D = q.shape
    KV = k.shape[2]
    if T == 1 and not is_causal:  # decode: each KV head's query group becomes its query rows, so K/V never repeat
        q_groups = q.view(B, KV, H // KV, D)  # heads h = j·G … j·G + G − 1 share KV head j
        with sdpa_kernel(_DECODE_BACKENDS):  # cuDNN would rebuild its plan every step as the key length grows
            o = F.scaled_dot_product_attention(q_groups, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return o.reshape(B, 1, H, D)  # [B, KV, G, D] -> [B, 1, H, D]
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=is_causal, enable_gqa=True
    )  # [B, H, T, D]
    return o.transpose(1, 2)


class Expert(nn.Module):
    """SwiGLU feed-forward: w2(silu(w1 x) ⊙ w3 x)."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, intermediate, bias=False)
        self.w2 = nn.Linear(intermediate, hidden, bias=False)
        self.w3 = nn.Linear(hidden, intermediate, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoE(nn.Module):
    """Top-k mixture of SwiGLU experts; the router runs in fp32 and the k chosen weights are renormalised to sum 1.

    Two ways to run the experts, with equal results: `pack()` lays all experts' weights out as two stacked tensors
    (each expert's w1/w3/w2 a view into them), and inference then runs every expert in two grouped matrix products
    over token groups whose offsets stay on the device, so the host never waits for the routing. Unpacked, or when
    gradients are needed, each expert runs on its own rows, which needs the per-expert counts on the host.
    """

    def __init__(self, config: MiniMaxConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_local_experts, bias=False)
        self.experts = nn.ModuleList(
            Expert(config.hidden_size, config.intermediate_size) for _ in range(config.num_local_experts)
        )
        self._packed: tuple[torch.Tensor, torch.Tensor] | None = None  # w13 [E, 2I, h], w2 [E, h, I]
        self._packed_at: list[int] = []  # data pointers of every expert weight while they are views of _packed

    def _expert_weights(self) -> list[torch.Tensor]:
        return [w for e in self.experts for w in (e.w1.weight, e.w3.weight, e.w2.weight)]

    @torch.no_grad()
    def pack(self) -> None:
        """Stack the expert weights (w1 and w3 side by side) and make each expert's weights views into the stacks.
        Names, shapes, values and checkpoints do not change; the memory moves once. Meant for inference: gradients
        take the per-expert path anyway."""
        if self._packed is not None and self.is_packed():
            return
        w13 = torch.stack([torch.cat([e.w1.weight, e.w3.weight]) for e in self.experts])  # [E, 2I, h]
        w2 = torch.stack([e.w2.weight for e in self.experts])  # [E, h, I]
        inner = w13.shape[1] // 2
        for i, expert in enumerate(self.experts):
            for linear, view in ((expert.w1, w13[i, :inner]), (expert.w3, w13[i, inner:]), (expert.w2, w2[i])):
                linear.weight = nn.Parameter(view, requires_grad=linear.weight.requires_grad)
        self._packed = (w13, w2)
        self._packed_at = [w.data_ptr() for w in self._expert_weights()]

    def is_packed(self) -> bool:
        """Whether the expert weights are still the views `pack` made (moving or reloading the model undoes it)."""
        return self._packed is not None and [w.data_ptr() for w in self._expert_weights()] == self._packed_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, h]
        probs = torch.softmax(F.linear(flat.float(), self.gate.weight.float()), dim=-1)  # [N, E] fp32
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [N, k]
        weights = weights / weights.sum(dim=-1, keepdim=True)
        order = chosen.flatten().argsort(stable=True)  # [N·k] (token, slot) pairs grouped by expert
        routed = flat[order // self.top_k]  # [N·k, h] each token once per chosen expert, grouped by expert
        grouped = None
        if self.is_packed() and not (torch.is_grad_enabled() and flat.requires_grad):
            grouped = self._grouped(routed, chosen.flatten()[order])
        if grouped is None:
            grouped = self._looped(routed, chosen)
        per_slot = grouped[order.argsort()].view(-1, self.top_k, shape[-1])  # [N, k, h] back in order
        # A fixed-order weighted sum rather than scattered adds: the same on every device and for any batch.
        mixed = (per_slot.float() * weights[..., None]).sum(dim=1)  # [N, h]
        return mixed.to(x.dtype).view(shape)

    def _looped(self, routed: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Each expert on its own rows of `routed` [N·k, h]; the row counts come to the host (a device sync)."""
        counts = torch.bincount(chosen.flatten(), minlength=len(self.experts)).tolist()
        outputs = [expert(rows) for expert, rows in zip(self.experts, routed.split(counts), strict=True) if len(rows)]
        return torch.cat(outputs)

    def _grouped(self, routed: torch.Tensor, experts_sorted: torch.Tensor) -> torch.Tensor | None:
        """Every expert at once over `routed` [N·k, h] (rows sorted by expert, `experts_sorted` [N·k]); None where the
        grouped product cannot run these tensors (a dtype or alignment the device's kernel does not take)."""
        w13, w2 = self._packed  # type: ignore[misc]
        ids = torch.arange(len(self.experts), device=routed.device, dtype=experts_sorted.dtype)
        ends = torch.searchsorted(experts_sorted, ids, right=True).to(torch.int32)  # [E] end row of each group
        try:
            hidden = grouped_mm(routed, w13.transpose(1, 2), ends)  # [N·k, 2I]
            gate, up = hidden.chunk(2, dim=-1)
            return grouped_mm(F.silu(gate) * up, w2.transpose(1, 2), ends)  # [N·k, h]
        except RuntimeError as err:
            if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
                raise
            self._packed, self._packed_at = None, []  # this module runs per expert from now on
            return None


def grouped_mm(a: torch.Tensor, b: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Rows ends[g-1]:ends[g] of a [M, K] times b[g] [K, N] for each group g, in one call: [M, N]."""
    return torch._grouped_mm(a, b, offs=ends)


class DecoderLayer(nn.Module):
    """norm → attention → α·residual + β·out → norm → MoE → α·residual + β·out, residual = normed input if postnorm."""

    def __init__(self, config: MiniMaxConfig, layer: int) -> None:
        super().__init__()
        self.postnorm = config.postnorm
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn: LightningAttention | SoftmaxAttention
        if config.attn_type_list[layer] == LIGHTNING:
            self.self_attn = LightningAttention(config, layer)
            self.attn_alpha = config.layernorm_linear_attention_alpha
            self.attn_beta = config.layernorm_linear_attention_beta
        else:
            self.self_attn = SoftmaxAttention(config, layer)
            self.attn_alpha = config.layernorm_full_attention_alpha
            self.attn_beta = config.layernorm_full_attention_beta
        self.mlp_alpha, self.mlp_beta = config.layernorm_mlp_alpha, config.layernorm_mlp_beta
        self.block_sparse_moe = SparseMoE(config)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = (h if self.postnorm else x) * self.attn_alpha + self.self_attn(h, ctx) * self.attn_beta
        h = self.post_attention_layernorm(x)
        return (h if self.postnorm else x) * self.mlp_alpha + self.block_sparse_moe(h) * self.mlp_beta


class MiniMaxModel(nn.Module):
    """Embeddings, decoder layers and the final norm (the `model.` prefix of checkpoint keys)."""

    def __init__(self, config: MiniMaxConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


@dataclass(frozen=True)
class ParameterCounts:
    """Total parameters, and those one token uses (k of E experts; embeddings and lm_head excluded)."""

    total: int
    active: int


class MiniMaxForCausalLM(nn.Module):
    """The language model: `model(input_ids, cache=None, cu_seqlens=None, logits_to_keep=0) -> logits`."""

    def __init__(self, config: MiniMaxConfig) -> None:
        super().__init__()
        self.config = config
        self.cache_config = config  # the heads this process caches; tensor parallelism narrows it (mmx.model.parallel)
        self.model = MiniMaxModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.inv_freq = DeviceConstant(rope_inverse_frequencies(config.rotary_dim, config.rope_theta))
        self.init_weights()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Random weights: normal(0, initializer_range) for matrices, ones for norms. Drawn on the CPU from `seed`
        (or the global RNG), so a seed gives the same model on every device. A no-op on the meta device."""
        if self.device.type == "meta":
            return
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                draw = torch.empty(param.shape, dtype=torch.float32).normal_(0.0, std, generator=generator)
                param.copy_(draw)

    def pack_experts(self) -> MiniMaxForCausalLM:
        """Lay every MoE layer out for grouped expert products (`SparseMoE.pack`): inference without host syncs.
        Layers whose experts were swapped (8-bit experts, expert parallel: `mmx.model.parallel`) keep their own path."""
        for layer in self.model.layers:
            moe = layer.block_sparse_moe
            if isinstance(moe, SparseMoE) and all(
                isinstance(linear, nn.Linear) for e in moe.experts for linear in (e.w1, e.w2, e.w3)
            ):
                moe.pack()
        return self

    def new_cache(self, batch_size: int) -> ModelCache:
        """An empty cache for `batch_size` sequences on this model's device."""
        return ModelCache(self.cache_config, batch_size, self.device, self.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: ModelCache | None = None,
        cu_seqlens: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T or logits_to_keep, V].

        With `cache`, the tokens continue each row's sequence and the cache advances by T. With `cu_seqlens`
        ([N+1] offsets, B = 1, no cache) the row packs N documents: lightning states restart at each boundary,
        softmax attention is causal within a document only, and RoPE positions restart at 0.
        """
        B, T = input_ids.shape
        if cu_seqlens is not None and (cache is not None or B != 1):
            raise ValueError("cu_seqlens packs documents into one row (B = 1) and cannot be combined with a cache")
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} rows, input has {B}")
        ctx = self._context(T, input_ids.device, cache, cu_seqlens)
        x = self.model.embed_tokens(input_ids)  # [B, T, h]
        for layer in self.model.layers:
            x = layer(x, ctx)
        if cache is not None:
            cache.advance(T)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.lm_head(self.model.norm(x))

    @torch.no_grad()
    def decode_fixed(self, tokens: torch.Tensor, cache: ModelCache, positions: torch.Tensor) -> torch.Tensor:
        """One greedy decode step whose shapes and memory addresses are the same at every step, so a CUDA graph can
        replay it: tokens [B] at `positions` [B] (a device tensor, advanced in place), K/V written there, softmax
        attention over the cache's whole capacity with the keys past each row's position masked. Returns the next
        tokens [B]; `cache.lengths` (host side) is the caller's to advance."""
        B = tokens.shape[0]
        device = tokens.device
        angles = positions[:, None, None].float() * self.inv_freq.on(device)  # [B, 1, rotary_dim / 2]
        cos, sin = angles.cos()[:, :, None], angles.sin()[:, :, None]  # [B, 1, 1, rotary_dim / 2]
        keys = torch.arange(cache.capacity, device=device)
        mask = (keys[None, :] <= positions[:, None])[:, None]  # [B, 1, capacity]: each row's keys so far and its own
        ctx = ForwardContext(cos, sin, cache, None, mask, False, positions)
        x = self.model.embed_tokens(tokens.view(B, 1))  # [B, 1, h]
        for layer in self.model.layers:
            x = layer(x, ctx)
        positions += 1
        return self.lm_head(self.model.norm(x))[:, -1].argmax(dim=-1)

    def _context(
        self, T: int, device: torch.device, cache: ModelCache | None, cu_seqlens: torch.Tensor | None
    ) -> ForwardContext:
        attn_mask, is_causal = None, True
        if cache is not None:
            positions = cache.positions(T)  # [1 or B, T]
            attn_mask, is_causal = cache.attention_mask(T)
        elif cu_seqlens is not None:
            cu_seqlens = cu_seqlens.to(device)
            starts = torch.repeat_interleave(cu_seqlens[:-1], cu_seqlens.diff())  # [T] start of each token's document
            positions = (torch.arange(T, device=device) - starts)[None]  # [1, T]
        else:
            positions = torch.arange(T, device=device)[None]  # [1, T]
        angles = positions[..., None].float() * self.inv_freq.on(device)  # [1 or B, T, rotary_dim / 2]
        cos, sin = angles.cos()[:, :, None], angles.sin()[:, :, None]  # [1 or B, T, 1, rotary_dim / 2]
        return ForwardContext(cos, sin, cache, cu_seqlens, attn_mask, is_causal)

    def parameter_counts(self) -> ParameterCounts:
        """Total and active parameters (works on the meta device, so the full model costs no memory)."""
        total = dense = expert = 0
        for name, param in self.named_parameters():
            total += param.numel()
            if ".experts." in name:
                expert += param.numel()
            elif not name.startswith(("model.embed_tokens.", "lm_head.")):
                dense += param.numel()
        routed = expert * self.config.num_experts_per_tok // self.config.num_local_experts
        return ParameterCounts(total, dense + routed)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MiniMaxForCausalLM:
        """Load a checkpoint directory (original or `-hf` layout); every key and shape must match its config exactly.
        Defaults: bf16 on CUDA, fp32 on CPU."""
        directory = Path(directory)
        if not directory.is_dir():
            raise MmxError(f"checkpoint directory {directory} does not exist", "pass the folder holding config.json")
        config = MiniMaxConfig.from_pretrained(directory)
        device, dtype = default_device_dtype(device, dtype)
        with torch.device("meta"):
            model = cls(config)
        expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
        state = read_state(directory, expected, config.num_local_experts, device, dtype)
        model.load_state_dict(state, assign=True)
        return model.eval()

    def save_pretrained(self, directory: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write config.json and sharded safetensors (original key layout) that `from_pretrained` reads back."""
        write_checkpoint(self.state_dict(), self.config, directory, max_shard_bytes=max_shard_bytes)
