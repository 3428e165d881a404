"""Tensor and expert parallelism across 2 and 4 gloo processes equal the single-process model.

The `tiny` preset (4 heads, 2 key/value heads, 4 experts, a 259-token vocabulary) covers both key/value rules — split
over 2 ranks, replicated over 4 — one expert per rank at 4, and an uneven vocabulary split. Every rank loads through
the native backend as a torchrun rank would (env://), so the option handling, the sharded random draw and the
sharded checkpoint reader are what is tested, in fp32 against the one-process logits within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmx.model.backends.base import load_backend
from mmx.model.generate import decode_step, prefill
from mmx.model.modeling import SparseMoE

TOLERANCE = 1e-5
PROMPT = "The quick brown fox jumps over the lazy dog. " * 3


def _ids() -> torch.Tensor:
    return torch.randint(0, 259, (2, 29), generator=torch.Generator().manual_seed(3))  # [2, 29]


def _outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full-forward logits, a chunked prefill of two rows (chunks of 7), and three decode steps after it."""
    ids = _ids()
    with torch.no_grad():
        logits = model(ids)
        cache = model.new_cache(2)
        steps = [prefill(model, ids, cache, chunk_size=7)]
        for t in range(3):
            steps.append(decode_step(model, ids[:, t], cache))
    return {"forward": logits, "cached": torch.stack(steps)}


def _close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    for key in want:
        assert (got[key] - want[key]).abs().max().item() <= TOLERANCE, key


def _hf_layout(directory: Path, out: Path, experts: int) -> None:
    """Rewrite a native checkpoint in the transformers-native layout: `mlp.gate`, fused experts, two shards."""
    from safetensors.torch import load_file

    native = load_file(directory / "model.safetensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in native.items():
        if ".experts." in key:
            continue
        state[key.replace("block_sparse_moe.gate", "mlp.gate")] = value
    for i in sorted({int(k.split(".")[2]) for k in native if ".experts." in k}):
        prefix = f"model.layers.{i}.block_sparse_moe.experts"
        w = {part: [native[f"{prefix}.{e}.{part}.weight"] for e in range(experts)] for part in ("w1", "w2", "w3")}
        up = [torch.cat([w1, w3]) for w1, w3 in zip(w["w1"], w["w3"], strict=True)]
        state[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(up)  # [E, 2I, h]
        state[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack(w["w2"])  # [E, h, I]
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    out.mkdir()
    for name, part in halves.items():
        save_file({k: state[k].contiguous() for k in part}, out / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (out / "config.json").write_text((directory / "config.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """One process: outputs of random:tiny (full precision, int8 and fp8 experts), its greedy text, and the model
    saved in both checkpoint layouts."""
    single = load_backend("random:tiny", device="cpu")
    root = tmp_path_factory.mktemp("tp")
    single.model.save_pretrained(root / "original")
    _hf_layout(root / "original", root / "hf", single.config.num_local_experts)
    return {
        "plain": _outputs(single.model),
        "int8": _outputs(load_backend("random:tiny", device="cpu", quantize_experts="int8").model),
        "fp8": _outputs(load_backend("random:tiny", device="cpu", quantize_experts="fp8").model),
        "text": single.generate([PROMPT], 12),
        "description": single.describe(),
        "checkpoints": [root / "original", root / "hf"],
        "moe": single.model.model.layers[0].block_sparse_moe,
    }


def _rank_checks(rank: int, world: int, reference: dict) -> None:
    backend = load_backend("random:tiny", device="cpu", tp=world)
    heads = backend.model.model.layers[0].self_attn.num_heads
    assert heads == 4 // world and backend.model.cache_config.num_key_value_heads == (2 // world or 1)
    _close(_outputs(backend.model), reference["plain"])
    assert backend.generate([PROMPT], 12) == reference["text"]
    described = backend.describe()
    assert described["tensor_parallel"] == world and described["parameters"] == reference["description"]["parameters"]
    for directory in reference["checkpoints"]:
        _close(_outputs(load_backend(f"mmx:{directory}", device="cpu", tp=world).model), reference["plain"])
    int8 = load_backend("random:tiny", device="cpu", tp=world, quantize_experts="int8")
    _close(_outputs(int8.model), reference["int8"])
    fp8 = load_backend("random:tiny", device="cpu", tp=world, quantize_experts="fp8")
    _close(_outputs(fp8.model), reference["fp8"])


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_model_equals_one_process(gloo_ranks, reference, world):
    gloo_ranks(_rank_checks, world, reference)


def _moe_checks(rank: int, world: int, moe: SparseMoE) -> None:
    import torch.distributed as dist

    from mmx.model.parallel.ep import ExpertParallelMoE
    from mmx.model.parallel.layout import ShardLayout

    dist.init_process_group("gloo")
    config = load_backend("random:tiny", device="cpu").config
    parallel = ExpertParallelMoE(moe, ShardLayout(config, rank, world), dist.group.WORLD)
    assert list(parallel.experts) == [str(e) for e in range(rank * 4 // world, (rank + 1) * 4 // world)]
    for tokens in (1, 3, 13):  # fewer tokens than ranks, and counts the ranks do not divide
        x = torch.randn(1, tokens, config.hidden_size, generator=torch.Generator().manual_seed(tokens))
        with torch.no_grad():
            assert (parallel(x) - moe(x)).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_moe_equals_the_dense_block(gloo_ranks, reference, world):
    gloo_ranks(_moe_checks, world, reference["moe"])
