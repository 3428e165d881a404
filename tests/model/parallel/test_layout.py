"""Who holds what: heads, key/value heads (split or replicated), experts and vocabulary rows per rank."""

from __future__ import annotations

import pytest

from mmx.errors import MmxError
from mmx.model.config import MiniMaxConfig
from mmx.model.parallel.layout import ShardLayout, check_tp


def test_the_full_model_on_eight_ranks():
    config = MiniMaxConfig.from_name("minimax-text-01")
    layouts = [ShardLayout(config, rank, 8) for rank in range(8)]
    assert [list(lay.heads) for lay in layouts[:2]] == [list(range(8)), list(range(8, 16))]
    assert [list(lay.kv_heads) for lay in layouts] == [[r] for r in range(8)]  # one KV head each: a clean split
    assert [lay.experts for lay in layouts[::7]] == [range(0, 4), range(28, 32)]
    assert layouts[0].vocab_rows == 25008 and layouts[7].vocab == range(175056, 200064)
    local = layouts[3].local_config()
    assert (local.num_attention_heads, local.num_key_value_heads) == (8, 1)


def test_more_ranks_than_key_value_heads_replicate_the_head_their_queries_read():
    config = MiniMaxConfig.from_name("tiny")  # 4 query heads in 2 groups
    assert [list(ShardLayout(config, r, 4).kv_heads) for r in range(4)] == [[0], [0], [1], [1]]
    assert ShardLayout(config, 0, 4).kv_replicated and not ShardLayout(config, 0, 2).kv_replicated
    last = ShardLayout(config, 3, 4)
    assert last.vocab_rows == 65 and last.vocab == range(195, 259)  # 259 ids in 4 × 65 rows, one of them padding


def test_slices_follow_each_tensor_layout():
    config = MiniMaxConfig.from_name("tiny")  # head_dim 16
    layout = ShardLayout(config, 1, 2)  # heads 2, 3; KV head 1; experts 2, 3
    attn = "model.layers.{}.self_attn.{}.weight"
    assert layout.slice_of(attn.format(0, "qkv_proj")) == (0, 96, 192)  # rows interleaved per head, 3·16 each
    assert layout.slice_of(attn.format(0, "out_proj")) == (1, 32, 64)
    assert layout.slice_of(attn.format(0, "norm")) == (0, 32, 64)
    assert layout.slice_of(attn.format(2, "k_proj")) == (0, 16, 32)
    assert layout.slice_of(attn.format(2, "o_proj")) == (1, 32, 64)
    assert layout.slice_of("model.layers.0.input_layernorm.weight") is None
    assert layout.slice_of("model.layers.0.block_sparse_moe.gate.weight") is None
    assert layout.holds("model.layers.0.block_sparse_moe.experts.3.w1.weight")
    assert not layout.holds("model.layers.0.block_sparse_moe.experts.1.w1.weight")
    with pytest.raises(KeyError):
        layout.slice_of("model.layers.0.block_sparse_moe.experts.1.w2.weight")


@pytest.mark.parametrize(
    ("preset", "size", "named"),
    [("tiny", 3, "4 attention heads and 4 experts"), ("minimax-text-01", 64, "32 experts")],
)
def test_a_degree_that_cannot_split_the_model_is_one_error_naming_those_that_can(preset, size, named):
    with pytest.raises(MmxError) as err:
        check_tp(MiniMaxConfig.from_name(preset), size)
    assert named in str(err.value) and "use --tp 1 or 2 or 4" in str(err.value)
