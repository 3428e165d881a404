"""MiniMaxConfig: presets, validation, and reading both config.json layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmx.errors import MmxError
from mmx.model.config import PRESETS, MiniMaxConfig, deepnorm_alpha

# The released MiniMax-Text-01 config.json, trimmed of keys that carry no architecture.
ORIGINAL = {
    "architectures": ["MiniMaxText01ForCausalLM"],
    "attn_type_list": [0, 0, 0, 0, 0, 0, 0, 1] * 10,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 6144,
    "intermediate_size": 9216,
    "layernorm_full_attention_alpha": 3.5565588200778455,
    "layernorm_full_attention_beta": 1.0,
    "layernorm_linear_attention_alpha": 3.5565588200778455,
    "layernorm_linear_attention_beta": 1.0,
    "layernorm_mlp_alpha": 3.5565588200778455,
    "layernorm_mlp_beta": 1.0,
    "max_position_embeddings": 10240000,
    "model_type": "minimax_text_01",
    "num_attention_heads": 64,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "num_local_experts": 32,
    "postnorm": True,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000000,
    "rotary_dim": 64,
    "shared_intermediate_size": 0,
    "shared_moe_mode": "sigmoid",
    "sliding_window": None,
    "tie_word_embeddings": False,
    "vocab_size": 200064,
}


def _hf_layout(original: dict) -> dict:
    """The same model described the way transformers' MiniMaxConfig writes it."""
    alpha = original["layernorm_mlp_alpha"]
    names = {0: "linear_attention", 1: "full_attention"}
    return {
        "model_type": "minimax",
        "layer_types": [names[t] for t in original["attn_type_list"]],
        "full_attn_alpha_factor": alpha,
        "full_attn_beta_factor": 1.0,
        "linear_attn_alpha_factor": alpha,
        "linear_attn_beta_factor": 1.0,
        "mlp_alpha_factor": alpha,
        "mlp_beta_factor": 1.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.5},
        "block_size": 256,
        **{k: original[k] for k in ("head_dim", "hidden_size", "intermediate_size", "num_attention_heads")},
        **{k: original[k] for k in ("num_experts_per_tok", "num_hidden_layers", "num_key_value_heads")},
        **{k: original[k] for k in ("num_local_experts", "rms_norm_eps", "vocab_size", "max_position_embeddings")},
    }


def _write(tmp_path: Path, raw: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


def test_full_preset_is_the_released_config(tmp_path: Path) -> None:
    assert MiniMaxConfig.from_pretrained(_write(tmp_path, ORIGINAL)) == PRESETS["minimax-text-01"]
    assert deepnorm_alpha(80) == pytest.approx(3.5565588200778455)


def test_hf_layout_reads_as_the_same_model(tmp_path: Path) -> None:
    assert MiniMaxConfig.from_pretrained(_write(tmp_path, _hf_layout(ORIGINAL))) == PRESETS["minimax-text-01"]


def test_hf_layout_with_original_rope_keys(tmp_path: Path) -> None:
    """A published -hf config keeps `rotary_dim` and a top-level `rope_theta` instead of rope_parameters."""
    raw = _hf_layout(ORIGINAL)
    del raw["rope_parameters"]
    raw |= {"rotary_dim": 64, "rope_theta": 10000000, "postnorm": True}
    assert MiniMaxConfig.from_pretrained(_write(tmp_path, raw)) == PRESETS["minimax-text-01"]
    del raw["rotary_dim"]  # nothing says the rotation is partial: transformers' reading, the whole head
    assert MiniMaxConfig.from_pretrained(_write(tmp_path, raw)).rotary_dim == 128


def test_to_dict_round_trips(tmp_path: Path) -> None:
    for name in PRESETS:
        config = MiniMaxConfig.from_name(name)
        assert MiniMaxConfig.from_pretrained(_write(tmp_path, config.to_dict())) == config


def test_presets_cover_the_contract() -> None:
    tiny = PRESETS["tiny"]
    assert tiny.softmax_layers and len(tiny.lightning_layers) >= 2 and tiny.num_local_experts == 4
    mini = PRESETS["mmx-mini"]
    assert mini.attn_type_list == [0] * 7 + [1] and mini.vocab_size == 259
    assert PRESETS["minimax-text-01"].softmax_layers == list(range(7, 80, 8))


def test_from_name_returns_a_copy() -> None:
    config = MiniMaxConfig.from_name("tiny")
    config.attn_type_list[0] = 1
    assert PRESETS["tiny"].attn_type_list[0] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attn_type_list": [0, 1]}, "attn_type_list has 2 entries"),
        ({"num_key_value_heads": 3}, "KV groups"),
        ({"rotary_dim": 7}, "rotary_dim 7"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ],
)
def test_invalid_configs_are_one_clear_error(change: dict, message: str) -> None:
    with pytest.raises(MmxError, match=message):
        MiniMaxConfig(**{**MiniMaxConfig.from_name("tiny").to_dict(), **change})


def test_unknown_preset_and_unsupported_features(tmp_path: Path) -> None:
    with pytest.raises(MmxError, match="unknown model preset 'nope'"):
        MiniMaxConfig.from_name("nope")
    with pytest.raises(MmxError, match="no config.json"):
        MiniMaxConfig.from_pretrained(tmp_path)
    with pytest.raises(MmxError, match="shared expert"):
        MiniMaxConfig.from_pretrained(_write(tmp_path, {**ORIGINAL, "shared_intermediate_size": [1024]}))
    with pytest.raises(MmxError, match="rope_type 'yarn'"):
        hf = _hf_layout(ORIGINAL)
        MiniMaxConfig.from_pretrained(_write(tmp_path, {**hf, "rope_parameters": {"rope_type": "yarn"}}))


def test_flops_per_token_counts_active_weights_and_attention() -> None:
    config = MiniMaxConfig.from_name("minimax-text-01")
    base = config.flops_per_token(0)
    # 2 FLOPs per active weight (45.9B, plus the 1.2B lm_head) and the fixed lightning-state cost
    assert base == pytest.approx(2 * (45.94e9 + 1.229e9) + 70 * 4 * 64 * 128 * 128, rel=1e-3)
    assert config.flops_per_token(1000) - base == pytest.approx(10 * 4 * 64 * 128 * 1000)
