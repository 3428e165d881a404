"""What the throughput numbers are measured against: FLOPs, bytes, peaks, and the architecture variants timed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import MiniMaxForCausalLM as HFMiniMaxForCausalLM

from mmx.errors import MmxError
from mmx.model.config import LIGHTNING, SOFTMAX, MiniMaxConfig
from mmx.workflows.bench.cost import decode_bytes, expected_experts, lm_head_flops, prefill_flops
from mmx.workflows.bench.peaks import datasheet_peaks, detect_peaks, measure_peaks
from mmx.workflows.bench.subjects import (
    Placement,
    attn_layout,
    build_native,
    build_transformers,
    parameter_count,
    reshape,
    transformers_config,
)

FULL = MiniMaxConfig.from_name("minimax-text-01")
L, S = LIGHTNING, SOFTMAX


@pytest.mark.parametrize(
    ("layers", "arch", "layout"),
    [
        (4, "hybrid", [L, L, L, S]),  # a slice shorter than the 7:1 period keeps one softmax layer, last
        (9, "hybrid", [L] * 7 + [S, L]),
        (3, "softmax", [S, S, S]),
        (2, "lightning", [L, L]),
    ],
)
def test_layouts_of_a_full_width_slice(layers, arch, layout):
    config = reshape(FULL, layers, arch)
    assert config.attn_type_list == layout and config.num_hidden_layers == layers
    assert (config.hidden_size, config.num_local_experts, config.head_dim) == (6144, 32, 128)


def test_the_hybrid_of_a_preset_at_its_own_depth_is_the_preset():
    for name in ("minimax-text-01", "tiny", "small", "mmx-mini"):
        preset = MiniMaxConfig.from_name(name)
        assert reshape(preset, None, "hybrid") == preset
        assert attn_layout("hybrid", preset.num_hidden_layers, 8 if name != "tiny" else 3) == preset.attn_type_list


def test_an_unknown_architecture_is_a_user_error():
    with pytest.raises(MmxError, match="unknown architecture"):
        reshape(FULL, 4, "mamba")


def test_the_anchor_slice_has_25_billion_parameters_in_both_implementations():
    """gpu_anchors.md: 4 layers of the full configuration (3 lightning + 1 softmax) hold 25.07B parameters."""
    config = reshape(FULL, 4, "hybrid")
    assert parameter_count(config) == pytest.approx(25.07e9, rel=1e-3)
    hf = transformers_config(config)
    with torch.device("meta"):
        theirs = HFMiniMaxForCausalLM(hf)
    assert sum(p.numel() for p in theirs.parameters()) == parameter_count(config)


def test_transformers_builds_the_same_shapes_from_our_config():
    config = reshape(MiniMaxConfig.from_name("tiny"), 4, "softmax")
    ours = build_native(config, torch.device("cpu"), torch.float32, seed=0)
    theirs = build_transformers(config, torch.device("cpu"), torch.float32, seed=0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert theirs.config.layer_types == ["full_attention"] * 4
    assert theirs.config.num_key_value_heads == config.num_key_value_heads
    for model in (ours, theirs):  # random, not uninitialised: norms are ones, matrices have the configured spread
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                assert torch.all(param == 1.0)
            elif param.numel() > 1000:
                assert param.std().item() == pytest.approx(config.initializer_range, rel=0.1)


@pytest.mark.parametrize(
    ("per_token", "free_gb", "chunk"),
    [
        (15_000, 79, 65536),  # mmx-mini on an 80 GB card: capped at the longest chunk
        (46_000, 79, 65536),  # `small`: 3 GB of activations at 64k
        (220_000, 28, 16384),  # the 25B slice beside its 50 GB of weights: 3.6 GB at 16k, 7.2 GB would not fit
        (220_000, 1, 4096),  # never below the CPU's chunk
    ],
)
def test_measured_chunks_are_the_longest_whose_activations_fit_a_share_of_free_memory(per_token, free_gb, chunk):
    from mmx.model.generate import ACTIVATION_SHARE, chunk_for

    assert chunk_for(per_token, ACTIVATION_SHARE * free_gb * 1e9) == chunk
    assert Placement(torch.device("cpu"), torch.float32, None).chunk_text == "auto"
    assert Placement(torch.device("cpu"), torch.float32, 1000).chunk_text == 1000  # an explicit size wins


def test_prefill_flops_count_the_lm_head_once_and_attention_by_mean_context():
    config = reshape(MiniMaxConfig.from_name("small"), 2, "softmax")
    one, two = prefill_flops(config, 1000), prefill_flops(config, 2000)
    quadratic = 2 * 4.0 * config.num_attention_heads * config.head_dim  # two softmax layers, 4·H·D per key
    linear = config.flops_per_token(0) - lm_head_flops(config)
    assert one == pytest.approx(1000 * (linear + quadratic * 1001 / 2) + lm_head_flops(config))
    assert two - 2 * one == pytest.approx(quadratic * (2000 * 2001 - 2 * 1000 * 1001) / 2 - lm_head_flops(config))


def test_expected_experts_go_from_top_k_to_all():
    assert expected_experts(FULL, 1) == pytest.approx(2)
    assert expected_experts(FULL, 64) == pytest.approx(32, rel=0.02)


def test_decode_bytes_grow_with_the_softmax_cache_only():
    config = reshape(FULL, 4, "hybrid")
    weights_only = decode_bytes(config, 0, 1, 2)
    per_token = 2 * config.num_key_value_heads * config.head_dim * 2  # one softmax layer's K and V, bf16
    assert decode_bytes(config, 1000, 1, 2) - weights_only == pytest.approx(1000 * per_token)
    lightning = dataclasses.replace(config, attn_type_list=[L] * 4)
    assert decode_bytes(lightning, 10**6, 1, 2) == decode_bytes(lightning, 0, 1, 2)  # a fixed-size state
    assert 45e9 < decode_bytes(config, 0, 64, 2) < 51e9  # at batch 64 nearly every expert of the 50 GB slice is read


@pytest.mark.parametrize(
    ("name", "peaks"),
    [
        ("NVIDIA H100 80GB HBM3", (989.4, 3.35)),
        ("NVIDIA H100 PCIe", (756.0, 2.0)),
        ("NVIDIA H200", (989.4, 4.8)),
        ("NVIDIA A100-SXM4-80GB", (312.0, 2.039)),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_datasheet_peaks_by_device_name(name, peaks):
    assert datasheet_peaks(name) == peaks


def test_the_cpu_has_no_datasheet_but_can_be_measured():
    assert detect_peaks(torch.device("cpu"), torch.float32).matmul_tflops is None
    measured = measure_peaks(torch.device("cpu"), torch.float32, matmul_size=256, copy_mb=8)
    assert measured.matmul_tflops > 0 and measured.bandwidth_tbs > 0 and measured.source == "measured (float32)"
