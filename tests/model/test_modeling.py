"""The modules themselves: slopes, RoPE, MoE routing, packed documents, parameter counts."""

from __future__ import annotations

import pytest
import torch

from mmx.kernels.slopes import alibi_slopes
from mmx.model import MiniMaxConfig, MiniMaxForCausalLM
from mmx.model.modeling import apply_rope, lightning_slopes


@pytest.fixture(scope="module")
def tiny() -> MiniMaxForCausalLM:
    model = MiniMaxForCausalLM(MiniMaxConfig.from_name("tiny"))
    model.config.initializer_range = 0.2  # large weights: routing, gating and attention patterns all matter
    model.init_weights(seed=0)
    return model.eval()


def test_slopes_follow_alibi_and_the_layer_schedule() -> None:
    assert alibi_slopes(8) == pytest.approx([2 ** (-(h + 1)) for h in range(8)])
    # 6 heads: the 4-head slopes, then every other one of the 8-head slopes
    assert alibi_slopes(6) == pytest.approx(alibi_slopes(4) + alibi_slopes(8)[0::2][:2])
    first, last = lightning_slopes(64, 0, 80), lightning_slopes(64, 79, 80)
    assert first[0].item() == pytest.approx(2 ** (-8 / 64) * (1 + 1e-5))
    assert last[0].item() == pytest.approx(2 ** (-8 / 64) * 1e-5)
    assert first.dtype == torch.float32


def test_partial_rope_rotates_only_the_first_channels() -> None:
    x = torch.randn(1, 5, 2, 16, generator=torch.Generator().manual_seed(3))
    angles = torch.arange(5.0)[:, None] * torch.tensor([1.0, 0.1, 0.01, 0.001])  # [T, rotary_dim / 2]
    out = apply_rope(x, angles.cos()[None, :, None], angles.sin()[None, :, None])
    assert torch.equal(out[..., 8:], x[..., 8:])
    assert torch.allclose(out[..., :8].norm(dim=-1), x[..., :8].norm(dim=-1), atol=1e-5)  # a rotation
    assert torch.equal(out[:, 0], x[:, 0])  # position 0 is the identity


def test_packed_documents_equal_separate_forwards(tiny: MiniMaxForCausalLM) -> None:
    lengths = [37, 1, 70, 12]
    gen = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, 259, (1, n), generator=gen) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    with torch.no_grad():
        packed = tiny(torch.cat(docs, dim=1), cu_seqlens=cu)
        separate = torch.cat([tiny(d) for d in docs], dim=1)
    assert (packed - separate).abs().max().item() < 1e-4  # logits of size ~4: fp32 rounding only


def test_packing_changes_nothing_but_the_boundaries(tiny: MiniMaxForCausalLM) -> None:
    """Without the boundary the second document would see the first: the test above can fail."""
    ids = torch.randint(0, 259, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        packed = tiny(ids, cu_seqlens=torch.tensor([0, 20, 40]))
        whole = tiny(ids)
    assert torch.allclose(packed[:, :20], whole[:, :20], atol=1e-5)
    assert not torch.allclose(packed[:, 20:], whole[:, 20:], atol=1e-3)


def test_logits_to_keep_and_gradients(tiny: MiniMaxForCausalLM) -> None:
    ids = torch.randint(0, 259, (2, 9), generator=torch.Generator().manual_seed(2))
    full = tiny(ids)
    assert full.shape == (2, 9, 259)
    assert torch.allclose(tiny(ids, logits_to_keep=3), full[:, -3:], atol=1e-6)
    full.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in tiny.parameters() if p.requires_grad)
    tiny.zero_grad(set_to_none=True)


def test_seeded_init_is_reproducible() -> None:
    config = MiniMaxConfig.from_name("tiny")
    a, b = MiniMaxForCausalLM(config), MiniMaxForCausalLM(config)
    a.init_weights(seed=3)
    b.init_weights(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_full_model_parameter_counts_match_the_model_card() -> None:
    with torch.device("meta"):
        model = MiniMaxForCausalLM(MiniMaxConfig.from_name("minimax-text-01"))
    counts = model.parameter_counts()
    assert counts.total / 1e9 == pytest.approx(456.1, abs=0.05)
    assert counts.active / 1e9 == pytest.approx(45.9, abs=0.05)


def test_bf16_model_keeps_fp32_states_and_tracks_fp32(tiny: MiniMaxForCausalLM) -> None:
    """The GPU precision rule on the CPU: bf16 weights and activations, fp32 lightning states and router."""
    half = MiniMaxForCausalLM(tiny.config).to(torch.bfloat16)
    half.load_state_dict(tiny.state_dict())
    ids = torch.randint(0, 259, (1, 80), generator=torch.Generator().manual_seed(4))
    cache = half.new_cache(1)
    with torch.no_grad():
        logits = half(ids, cache=cache)
        reference = tiny(ids)
    assert logits.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in cache.states.values())
    assert all(k.dtype == torch.bfloat16 for k in cache.keys.values())
    # bf16 rounding flips an occasional top-2 routing choice, so compare on average, not at the worst position
    assert (logits.float() - reference).abs().mean().item() < 0.15 * reference.abs().mean().item()
