"""MiniMaxConfig: the architecture's hyper-parameters under the original `config.json` field names, plus named presets.

`from_pretrained` reads both the original MiniMax-Text-01 `config.json` and the transformers-native (`-hf`) one, so a
checkpoint directory of either kind can be pointed at directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmx.errors import MmxError
from mmx.files import read_json, validated

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # shipped checkpoints, one folder per preset name
LIGHTNING = 0  # attn_type_list value of a lightning (linear) attention layer
SOFTMAX = 1  # attn_type_list value of a softmax (full) attention layer


def deepnorm_alpha(num_layers: int) -> float:
    """The residual scale MiniMax-Text-01 uses for every sub-layer: (2L)^(1/4) (3.5566 for its 80 layers)."""
    return (2 * num_layers) ** 0.25


@dataclass
class MiniMaxConfig:
    """Hyper-parameters of a MiniMax-Text-01-style model; defaults are the full 456B model's values."""

    vocab_size: int = 200064
    hidden_size: int = 6144
    intermediate_size: int = 9216  # per expert
    num_hidden_layers: int = 80
    num_attention_heads: int = 64  # both layer kinds
    num_key_value_heads: int = 8  # softmax layers only (GQA)
    head_dim: int = 128  # H·D need not equal hidden_size (64 × 128 = 8192 ≠ 6144)
    attn_type_list: list[int] = field(default_factory=lambda: ([LIGHTNING] * 7 + [SOFTMAX]) * 10)
    rotary_dim: int = 64  # only the first rotary_dim channels of a head rotate
    rope_theta: float = 10_000_000.0
    max_position_embeddings: int = 10_240_000
    rms_norm_eps: float = 1e-5
    num_local_experts: int = 32
    num_experts_per_tok: int = 2
    hidden_act: str = "silu"
    layernorm_full_attention_alpha: float = deepnorm_alpha(80)
    layernorm_full_attention_beta: float = 1.0
    layernorm_linear_attention_alpha: float = deepnorm_alpha(80)
    layernorm_linear_attention_beta: float = 1.0
    layernorm_mlp_alpha: float = deepnorm_alpha(80)
    layernorm_mlp_beta: float = 1.0
    postnorm: bool = True  # residual branch carries the normed input (DeepNorm style)
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    initializer_range: float = 0.02  # std of random weights (random:PRESET specs, training from scratch)

    def __post_init__(self) -> None:
        self.attn_type_list = list(self.attn_type_list)
        problems = []
        if len(self.attn_type_list) != self.num_hidden_layers:
            problems.append(
                f"attn_type_list has {len(self.attn_type_list)} entries for {self.num_hidden_layers} layers"
            )
        if any(t not in (LIGHTNING, SOFTMAX) for t in self.attn_type_list):
            problems.append("attn_type_list entries must be 0 (lightning) or 1 (softmax)")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"{self.num_attention_heads} heads do not split into {self.num_key_value_heads} KV groups")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            problems.append(f"rotary_dim {self.rotary_dim} must be even and within head_dim {self.head_dim}")
        if not 0 < self.num_experts_per_tok <= self.num_local_experts:
            problems.append(f"num_experts_per_tok {self.num_experts_per_tok} must be in 1..{self.num_local_experts}")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act {self.hidden_act!r} is not supported (MiniMax-Text-01 uses silu)")
        if self.tie_word_embeddings:
            problems.append("tied embeddings are not supported (MiniMax-Text-01 has an untied lm_head)")
        if problems:
            raise MmxError(f"invalid MiniMax config: {'; '.join(problems)}", "fix the config fields named above")

    @property
    def lightning_layers(self) -> list[int]:
        """Indices of the lightning-attention layers."""
        return [i for i, t in enumerate(self.attn_type_list) if t == LIGHTNING]

    @property
    def softmax_layers(self) -> list[int]:
        """Indices of the softmax-attention layers."""
        return [i for i, t in enumerate(self.attn_type_list) if t == SOFTMAX]

    @classmethod
    def from_name(cls, name: str) -> MiniMaxConfig:
        """A fresh copy of the preset `name`."""
        if name not in PRESETS:
            raise MmxError(f"unknown model preset {name!r}", f"choose one of {', '.join(PRESETS)} (see `mmx models`)")
        return dataclasses.replace(PRESETS[name])

    @classmethod
    def from_dict(cls, raw: Any, where: str = "config.json") -> MiniMaxConfig:
        """Build from a parsed config.json in the original or the transformers-native (`-hf`) layout, checked first
        (`ConfigFile`): a field of the wrong type or range is one MmxError naming `where` and the field."""
        validated(ConfigFile, raw, where, _CONFIG_HINT)
        fields = _from_hf_layout(raw) if _is_hf_layout(raw) else _from_original_layout(raw)
        return cls(**fields)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MiniMaxConfig:
        """Read `directory/config.json` (original or `-hf` layout)."""
        path = Path(directory) / "config.json"
        if not path.is_file():
            raise MmxError(f"no config.json in {directory}", "point at a MiniMax checkpoint directory")
        return cls.from_dict(read_json(path, _CONFIG_HINT), str(path))

    def to_dict(self) -> dict[str, Any]:
        """The original config.json fields (what `save_pretrained` writes)."""
        return dataclasses.asdict(self)

    def flops_per_token(self, context: float) -> float:
        """Forward FLOPs for one token that attends to `context` keys in the softmax layers (MFU accounting).

        Matmuls count 2 FLOPs per multiply-add: the active weights (attention, routed experts, router, lm_head;
        embeddings are a lookup), softmax attention 4·H·D·context (scores and weighted sum), and lightning attention
        4·H·D² (state update kᵀv and readout q·S — the recurrence, which the block form computes exactly). For a
        prefill of T tokens pass the mean context (T + 1) / 2; for a decode step at position L pass L + 1. Training
        costs about three times the forward.
        """
        h, H, D, kv = self.hidden_size, self.num_attention_heads, self.head_dim, self.num_key_value_heads
        lightning_weights = h * 3 * H * D + h * H * D + H * D * h  # qkv_proj, output_gate, out_proj
        softmax_weights = h * H * D + 2 * h * kv * D + H * D * h  # q, k, v, o
        moe_weights = h * self.num_local_experts + self.num_experts_per_tok * 3 * h * self.intermediate_size
        n_lin, n_soft = len(self.lightning_layers), len(self.softmax_layers)
        weights = n_lin * lightning_weights + n_soft * softmax_weights + self.num_hidden_layers * moe_weights
        weights += h * self.vocab_size  # lm_head
        return 2.0 * weights + n_soft * 4.0 * H * D * context + n_lin * 4.0 * H * D * D


_CONFIG_HINT = "fix that field, or restore the checkpoint's original config.json"
_Size = Annotated[int, Field(strict=True, gt=0, lt=2**31)]
MAX_PARAMETERS = 2**42  # ~4.4T: ten times MiniMax-Text-01; past this a size is a typo, and tensor sizes overflow
_TokenId = Annotated[int, Field(strict=True, ge=0)]
_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class _RopeParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    rope_type: str = "default"
    rope_theta: _Positive | None = None
    partial_rotary_factor: _Positive | None = None


class ConfigFile(BaseModel):
    """What a checkpoint's config.json must hold, in either layout, before any of it is used: every size a positive
    integer, every scale a finite number, and the architecture's shape given (no field silently takes the 456B
    model's value). Unknown keys are let through (and dropped later)."""

    model_config = ConfigDict(extra="allow")

    vocab_size: _Size
    hidden_size: _Size
    intermediate_size: _Size
    num_hidden_layers: _Size
    num_attention_heads: _Size
    num_key_value_heads: _Size
    num_local_experts: _Size
    num_experts_per_tok: _Size
    attn_type_list: list[Literal[0, 1]] | None = None  # the original layout
    layer_types: list[str] | None = None  # the -hf layout
    head_dim: _Size | None = None
    rotary_dim: _Size | None = None
    partial_rotary_factor: _Positive | None = None
    rope_theta: _Positive | None = None
    rope_parameters: _RopeParameters | None = None
    max_position_embeddings: _Size | None = None
    rms_norm_eps: _Positive | None = None
    hidden_act: str | None = None
    layernorm_full_attention_alpha: _Number | None = None
    layernorm_full_attention_beta: _Number | None = None
    layernorm_linear_attention_alpha: _Number | None = None
    layernorm_linear_attention_beta: _Number | None = None
    layernorm_mlp_alpha: _Number | None = None
    layernorm_mlp_beta: _Number | None = None
    full_attn_alpha_factor: _Number | None = None
    full_attn_beta_factor: _Number | None = None
    linear_attn_alpha_factor: _Number | None = None
    linear_attn_beta_factor: _Number | None = None
    mlp_alpha_factor: _Number | None = None
    mlp_beta_factor: _Number | None = None
    postnorm: bool | None = Field(default=None, strict=True)
    tie_word_embeddings: bool | None = Field(default=None, strict=True)
    bos_token_id: _TokenId | None = None
    eos_token_id: _TokenId | list[_TokenId] | None = None
    initializer_range: _Positive | None = None

    @model_validator(mode="after")
    def _layer_kinds(self) -> ConfigFile:
        if self.attn_type_list is None and self.layer_types is None:
            raise ValueError("attn_type_list (or layer_types in the -hf layout): the attention kind of every layer")
        return self

    @model_validator(mode="after")
    def _buildable(self) -> ConfigFile:
        """An upper bound on the parameter count (every layer counted as the larger kind), in exact integers."""
        h, heads, kv = self.hidden_size, self.num_attention_heads, self.num_key_value_heads
        head_dim = self.head_dim or max(1, h // heads)
        attention = h * heads * head_dim * 5 + 2 * h * kv * head_dim
        experts = self.num_local_experts * (3 * h * self.intermediate_size + h)
        total = 2 * self.vocab_size * h + self.num_hidden_layers * (attention + experts)
        if total > MAX_PARAMETERS:
            raise ValueError(f"sizes that build a model of at most {MAX_PARAMETERS:.2e} parameters (not {total:.2e})")
        return self


# config.json keys that carry no architecture (or describe behaviour we do not model) and are dropped on read.
_IGNORED_KEYS = {
    "architectures",
    "auto_map",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "output_router_logits",
    "router_aux_loss_coef",
    "router_jitter_noise",
    "attention_dropout",
    "pad_token_id",
    "block_size",  # prefill tiling; the kernels choose their own (the result is exact either way)
    "shared_moe_mode",  # only meaningful with a shared expert, which must be absent
    "output_attentions",
    "output_hidden_states",
    "return_dict",
}


def _is_hf_layout(raw: dict[str, Any]) -> bool:
    return "layer_types" in raw or raw.get("model_type") == "minimax"


def _check_unsupported(raw: dict[str, Any]) -> None:
    shared = raw.get("shared_intermediate_size", 0)
    if any(shared) if isinstance(shared, list) else shared:
        raise MmxError("config.json asks for a shared expert", "MiniMax-Text-01 has none; this layout is unsupported")
    if raw.get("sliding_window") is not None:
        raise MmxError("config.json asks for sliding-window attention", "MiniMax-Text-01 attends to the full context")


def _known(raw: dict[str, Any]) -> dict[str, Any]:
    """The MiniMaxConfig fields `raw` sets; a null counts as absent, except where None is a value (token ids)."""
    nullable = {f.name for f in dataclasses.fields(MiniMaxConfig) if f.default is None}
    names = {f.name for f in dataclasses.fields(MiniMaxConfig)}
    return {k: v for k, v in raw.items() if k in names and (v is not None or k in nullable)}


def _from_original_layout(raw: dict[str, Any]) -> dict[str, Any]:
    _check_unsupported(raw)
    fields = _known(raw)
    if fields.get("head_dim") is None and "hidden_size" in raw and "num_attention_heads" in raw:
        fields["head_dim"] = raw["hidden_size"] // raw["num_attention_heads"]
    return fields


_HF_RESIDUAL_FACTORS = {
    "full_attn_alpha_factor": "layernorm_full_attention_alpha",
    "full_attn_beta_factor": "layernorm_full_attention_beta",
    "linear_attn_alpha_factor": "layernorm_linear_attention_alpha",
    "linear_attn_beta_factor": "layernorm_linear_attention_beta",
    "mlp_alpha_factor": "layernorm_mlp_alpha",
    "mlp_beta_factor": "layernorm_mlp_beta",
}
_HF_LAYER_TYPES = {"linear_attention": LIGHTNING, "full_attention": SOFTMAX}


def _from_hf_layout(raw: dict[str, Any]) -> dict[str, Any]:
    """Translate transformers' MiniMaxConfig: layer_types, *_factor residual scales, rope_parameters."""
    _check_unsupported(raw)
    fields = _known(raw)
    fields.pop("attn_type_list", None)
    head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    fields["head_dim"] = head_dim
    layer_types = raw.get("layer_types")
    if layer_types is None:
        raise MmxError("the -hf config.json has no layer_types", "add the per-layer attention kinds to config.json")
    unknown = sorted(set(layer_types) - set(_HF_LAYER_TYPES))
    if unknown:
        raise MmxError(f"unknown layer_types {unknown}", f"expected {' or '.join(_HF_LAYER_TYPES)}")
    fields["attn_type_list"] = [_HF_LAYER_TYPES[t] for t in layer_types]
    for hf_name, name in _HF_RESIDUAL_FACTORS.items():
        if hf_name in raw:
            fields[name] = float(raw[hf_name])
        else:  # transformers' default for an absent factor
            fields[name] = 1.0
    rope = raw.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise MmxError(f"rope_type {rope_type!r} is not supported", "MiniMax-Text-01 uses plain (default) RoPE")
    fields["rope_theta"] = float(rope.get("rope_theta", raw.get("rope_theta", 1_000_000.0)))
    factor = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor"))
    if factor is not None:
        fields["rotary_dim"] = int(head_dim * float(factor))
    elif "rotary_dim" not in raw:  # transformers rotates the whole head unless told otherwise
        fields["rotary_dim"] = head_dim
    return fields


def _preset(num_layers: int, **fields: Any) -> MiniMaxConfig:
    """A preset whose residual alphas follow the DeepNorm rule for its depth, like the full model's."""
    alpha = deepnorm_alpha(num_layers)
    alphas = {
        "layernorm_full_attention_alpha": alpha,
        "layernorm_linear_attention_alpha": alpha,
        "layernorm_mlp_alpha": alpha,
    }
    return MiniMaxConfig(num_hidden_layers=num_layers, **alphas, **fields)


def _hybrid(num_layers: int, period: int = 8) -> list[int]:
    """MiniMax's layout: every `period`-th layer is softmax attention, the rest lightning."""
    return [SOFTMAX if (i + 1) % period == 0 else LIGHTNING for i in range(num_layers)]


BYTE_VOCAB = 259  # mmx.model.ByteTokenizer: 256 bytes + PAD, BOS, EOS

PRESETS: dict[str, MiniMaxConfig] = {
    # The released model (456.1B total, 45.9B active).
    "minimax-text-01": MiniMaxConfig(),
    # Unit tests: every code path (lightning before and after a softmax layer, GQA, partial RoPE, 4 experts) in
    # a model that runs in milliseconds on a CPU.
    "tiny": _preset(
        4,
        attn_type_list=[LIGHTNING, LIGHTNING, SOFTMAX, LIGHTNING],
        vocab_size=BYTE_VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rotary_dim=8,
        num_local_experts=4,
        max_position_embeddings=1 << 20,
        bos_token_id=257,
        eos_token_id=258,
    ),
    # Speed and memory benchmarks: the full model's head size, GQA ratio, rotary fraction and 7:1 layout at a
    # width that fits one GPU with long contexts; byte vocabulary so it runs with the byte tokenizer.
    "small": _preset(
        16,
        attn_type_list=_hybrid(16),
        vocab_size=BYTE_VOCAB,
        hidden_size=1024,
        intermediate_size=1536,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=128,
        rotary_dim=64,
        num_local_experts=8,
        bos_token_id=257,
        eos_token_id=258,
    ),
    # The embedded default model (weights in model/weights/mmx-mini/, trained by `mmx train`; see its MODEL_CARD.md).
    # Small enough to ship (8.9M parameters, 17.8 MB in bf16). Eight lightning heads of 32 channels decay from
    # 2-token to ~2k-token windows, so the lightning layers are local mixers that behave alike at any length; the
    # softmax layer does the long-range retrieval with 4 KV heads, and its RoPE (8 of 32 channels, base 1e4,
    # longest period ~6k tokens) completes every period within the training rows, so no rotation it meets at 4M
    # tokens is new to it.
    "mmx-mini": _preset(
        8,
        attn_type_list=_hybrid(8),
        vocab_size=BYTE_VOCAB,
        hidden_size=256,
        intermediate_size=256,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        rotary_dim=8,
        rope_theta=10_000.0,
        num_local_experts=4,
        bos_token_id=257,
        eos_token_id=258,
    ),
}
