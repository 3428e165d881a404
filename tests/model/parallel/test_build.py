"""A rank's random part: the exact draw is one process's weights cut to the rank; the local draw keeps replicated
weights equal across ranks and fills every tensor (8-bit experts included)."""

from __future__ import annotations

import torch

from mmx.model.config import MiniMaxConfig
from mmx.model.modeling import MiniMaxForCausalLM
from mmx.model.parallel.build import random_sharded
from mmx.model.parallel.layout import ShardLayout

CONFIG = MiniMaxConfig.from_name("tiny")
CPU = torch.device("cpu")


def test_the_exact_draw_is_the_one_process_model_cut_to_each_rank():
    full = MiniMaxForCausalLM(CONFIG)
    full.init_weights(5)
    weights = full.state_dict()
    for rank in range(2):
        layout = ShardLayout(CONFIG, rank, 2)
        part = random_sharded(layout, None, CPU, torch.float32, 5).state_dict()
        for name, value in part.items():
            cut = layout.slice_of(name)
            want = weights[name] if cut is None else weights[name].narrow(cut[0], cut[1], cut[2] - cut[1])
            assert torch.equal(value[: want.shape[0]], want), name  # vocabulary rows past the end are padding


def test_the_local_draw_fills_every_tensor_and_agrees_on_replicated_ones():
    parts = [random_sharded(ShardLayout(CONFIG, r, 2), None, CPU, torch.float32, 0, "fp8", exact=False) for r in (0, 1)]
    first, second = (dict(p.named_parameters()) | dict(p.named_buffers()) for p in parts)
    assert all(torch.isfinite(t.float()).all() for t in first.values())
    router = "model.layers.0.block_sparse_moe.gate.weight"
    assert torch.equal(first[router], second[router])
    assert not torch.equal(
        first["model.layers.0.self_attn.qkv_proj.weight"], second["model.layers.0.self_attn.qkv_proj.weight"]
    )
