"""Checkpoint IO: round trips, sharding, and one clear error for every way a checkpoint can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmx.errors import MmxError
from mmx.model import MiniMaxConfig, MiniMaxForCausalLM


@pytest.fixture(scope="module")
def tiny() -> MiniMaxForCausalLM:
    model = MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny"))
    model.init_weights(seed=4)
    return model.eval()


@pytest.fixture
def saved(tiny: MiniMaxForCausalLM, tmp_path: Path) -> Path:
    tiny.save_pretrained(tmp_path)
    return tmp_path


def _edit_weights(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_round_trip_single_file(tiny: MiniMaxForCausalLM, saved: Path) -> None:
    loaded = MiniMaxForCausalLM.from_pretrained(saved, device="cpu")
    assert loaded.config == tiny.config
    ids = torch.randint(0, 259, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids), tiny(ids))
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


def test_round_trip_sharded_with_index(tiny: MiniMaxForCausalLM, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / s).is_file() for s in shards)
    loaded = MiniMaxForCausalLM.from_pretrained(tmp_path, device="cpu", dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.to(torch.bfloat16)), key


def test_missing_key(saved: Path) -> None:
    _edit_weights(saved, lambda t: t.pop("model.layers.2.self_attn.k_proj.weight"))
    with pytest.raises(MmxError, match=r"missing model\.layers\.2\.self_attn\.k_proj\.weight — "):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")


def test_missing_keys_are_counted(saved: Path) -> None:
    def drop_layer(tensors: dict) -> None:
        for key in [k for k in tensors if k.startswith("model.layers.3.")]:
            del tensors[key]

    _edit_weights(saved, drop_layer)
    with pytest.raises(MmxError, match=r"is missing model\.layers\.3\.\S+ \(and \d+ more\)"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")


def test_unexpected_key(saved: Path) -> None:
    _edit_weights(saved, lambda t: t.update({"model.layers.9.input_layernorm.weight": torch.ones(64)}))
    with pytest.raises(MmxError, match=r"unexpected key model\.layers\.9\.input_layernorm\.weight"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")


def test_wrong_shape(saved: Path) -> None:
    _edit_weights(saved, lambda t: t.update({"lm_head.weight": torch.zeros(300, 64)}))
    with pytest.raises(MmxError, match=r"lm_head\.weight has shape \[300, 64\], the config needs \[259, 64\]"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")


def test_wrong_fused_expert_shape(saved: Path) -> None:
    _edit_weights(saved, lambda t: t.update({"model.layers.0.mlp.experts.down_proj": torch.zeros(4, 64, 95)}))
    with pytest.raises(MmxError, match=r"down_proj has shape \[4, 64, 95\], the config needs \[4, 64, 96\]"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")


def test_missing_config_shard_and_directory(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (saved / "config.json").unlink()
    with pytest.raises(MmxError, match="no config.json in"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")
    with pytest.raises(MmxError, match="does not exist"):
        MiniMaxForCausalLM.from_pretrained(saved / "nowhere", device="cpu")
    empty = tmp_path_factory.mktemp("config-only")
    (empty / "config.json").write_text(json.dumps(MiniMaxConfig.from_name("tiny").to_dict()))
    with pytest.raises(MmxError, match="no model.safetensors.index.json or model.safetensors"):
        MiniMaxForCausalLM.from_pretrained(empty, device="cpu")
    index = {"weight_map": {"lm_head.weight": "model-00001-of-00001.safetensors"}}
    (empty / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MmxError, match="shard model-00001-of-00001.safetensors is missing"):
        MiniMaxForCausalLM.from_pretrained(empty, device="cpu")


def test_unreadable_shard_and_index(saved: Path) -> None:
    weights = saved / "model.safetensors"
    index = {"weight_map": {"lm_head.weight": weights.name, "model.norm.weight": weights.name, "extra": weights.name}}
    (saved / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MmxError, match=r"^extra cannot be read from model\.safetensors"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")
    (saved / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(MmxError, match=r"index\.json is not valid JSON"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")
    (saved / "model.safetensors.index.json").unlink()
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(MmxError, match="checkpoint shard model.safetensors is unreadable"):
        MiniMaxForCausalLM.from_pretrained(saved, device="cpu")
