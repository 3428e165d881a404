"""MoE routing: grouped expert products over device-side offsets (packed experts) equal the per-expert routing."""

from __future__ import annotations

import pytest
import torch

from mmx.model import MiniMaxConfig, MiniMaxForCausalLM
from mmx.model.modeling import SparseMoE


def _model(preset: str, seed: int = 0) -> MiniMaxForCausalLM:
    model = MiniMaxForCausalLM(MiniMaxConfig.from_name(preset))
    model.init_weights(seed=seed)
    return model.eval()


@pytest.mark.parametrize("preset", ["tiny", "mmx-mini"])
def test_packed_experts_give_exactly_the_per_expert_results(preset: str) -> None:
    model = _model(preset)
    ids = torch.randint(0, 256, (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        looped = model(ids)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.pack_experts()
    assert all(layer.block_sparse_moe.is_packed() for layer in model.model.layers)
    with torch.no_grad():
        assert torch.equal(model(ids), looped)
    packed_state = model.state_dict()
    assert packed_state.keys() == state.keys() and all(torch.equal(packed_state[k], v) for k, v in state.items())


def test_an_expert_without_tokens_and_the_order_of_slots() -> None:
    moe = SparseMoE(MiniMaxConfig.from_name("tiny"))
    torch.nn.init.normal_(moe.gate.weight, std=1.0, generator=torch.Generator().manual_seed(2))
    for expert in moe.experts:
        for linear in (expert.w1, expert.w2, expert.w3):
            torch.nn.init.normal_(linear.weight, std=0.2)
    with torch.no_grad():
        moe.gate.weight[3] = -100.0  # nobody routes to expert 3
    x = torch.randn(3, 11, 64)
    with torch.no_grad():
        looped = moe(x)
        moe.pack()
        grouped = moe(x)
    assert torch.equal(grouped, looped)


def test_packed_inference_never_asks_the_host_for_expert_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("tiny").pack_experts()
    ids = torch.randint(0, 256, (1, 40))

    def no_host_counts(*_: object) -> None:
        raise AssertionError("the per-expert path (host-side counts) ran")

    monkeypatch.setattr(SparseMoE, "_looped", no_host_counts)
    with torch.no_grad():
        model(ids)
    with pytest.raises(AssertionError, match="per-expert path"):  # gradients take the per-expert path
        model(ids).sum().backward()


def test_moving_the_model_unpacks_it_and_results_stay_right() -> None:
    model = _model("tiny").pack_experts().to(torch.bfloat16)
    assert not model.model.layers[0].block_sparse_moe.is_packed()
    ids = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        assert torch.equal(model(ids), _model("tiny").to(torch.bfloat16)(ids))


def test_a_grouped_product_the_device_cannot_run_falls_back_per_expert(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmx.model import modeling

    model = _model("tiny")
    ids = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        looped = model(ids)
    model.pack_experts()

    def unsupported(*_: object) -> None:
        raise RuntimeError("grouped gemm is not supported for this dtype")

    monkeypatch.setattr(modeling, "grouped_mm", unsupported)
    with torch.no_grad():
        assert torch.equal(model(ids), looped)
    assert not model.model.layers[0].block_sparse_moe.is_packed()


@pytest.mark.gpu
def test_packed_bf16_routing_on_cuda_never_syncs_and_matches() -> None:
    model = _model("mmx-mini").to(device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (2, 4096), device="cuda")
    with torch.no_grad():
        looped = model(ids).float()
        model.pack_experts()
        moe = model.model.layers[0].block_sparse_moe
        x = torch.randn(2, 4096, 256, device="cuda", dtype=torch.bfloat16)
        moe(x)  # warm-up: first-call setup may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            moe(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        grouped = model(ids).float()
    assert (grouped - looped).norm() / looped.norm() < 1e-2
