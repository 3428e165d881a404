"""The native backend on tiny weights: spec prefixes, generation, stop strings, log-likelihoods, batch sizing."""

from __future__ import annotations

import math

import pytest
import torch

import mmx.model.backends.native as native
import mmx.model.generate as generation
from mmx.errors import MmxError
from mmx.model.backends.base import load_backend
from mmx.model.generate import DEFAULT_CHUNK, activation_bytes, measured_chunk


@pytest.fixture(scope="module")
def tiny():
    return load_backend("random:tiny")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny):
    """random:tiny saved as a checkpoint directory."""
    directory = tmp_path_factory.mktemp("ckpt") / "tiny-ckpt"
    tiny.model.save_pretrained(directory)
    return directory


def test_random_weights_are_seeded_and_described(tiny):
    again, other = load_backend("random:tiny:0"), load_backend("random:tiny:7")
    first = next(tiny.model.parameters())
    assert torch.equal(first, next(again.model.parameters()))
    assert not torch.equal(first, next(other.model.parameters()))
    info = tiny.describe()
    assert info["spec"] == "random:tiny" and info["random_weights"] is True and info["seed"] == 0
    assert info["preset"] == "tiny" and info["dtype"] == "fp32" and info["device"] == "cpu"
    assert info["config"]["num_hidden_layers"] == 4 and info["max_context"] == tiny.max_context


def test_a_checkpoint_loads_by_path_and_by_shipped_name(checkpoint, tiny, monkeypatch):
    by_path = load_backend(f"mmx:{checkpoint}")
    info = by_path.describe()
    assert info["random_weights"] is False and info["checkpoint"] == str(checkpoint)
    assert info["name"] == "tiny-ckpt" and len(info["weights_sha256"]) == 64
    prompts = ["The sky is", "a"]
    assert by_path.generate(prompts, 8) == tiny.generate(prompts, 8)

    monkeypatch.setattr(native, "WEIGHTS_DIR", checkpoint.parent)
    by_name = load_backend("tiny-ckpt")
    assert by_name.describe()["spec"] == "tiny-ckpt"
    assert by_name.describe()["weights_sha256"] == info["weights_sha256"]
    assert str(checkpoint.parent) not in by_name.describe()["checkpoint"]  # the install path is the user's machine


def test_batched_generation_equals_one_at_a_time(tiny):
    prompts = ["needle in a haystack " * 5, "x", "The special magic number is"]
    alone = [tiny.generate([p], 12)[0] for p in prompts]
    assert tiny.generate(prompts, 12) == alone
    capped = load_backend("random:tiny", batch_size=2)
    assert capped.generate(prompts, 12) == alone


def test_prompts_stream_in_chunks_sized_by_the_device(tiny, monkeypatch):
    assert tiny.prefill_chunk == DEFAULT_CHUNK == tiny.describe()["prefill_chunk"]  # on a CPU
    mini = load_backend("mmx-mini")  # a CPU measures nothing: short chunks, estimated activations
    assert (
        measured_chunk(mini.model)
        == (DEFAULT_CHUNK, activation_bytes(mini.config, 4))
        == (
            mini.prefill_chunk,
            mini.activation_bytes,
        )
    )
    prompts = ["needle in a haystack " * 6, "The special magic number is"]
    whole = tiny.generate(prompts, 8)
    pairs = [("needle in a haystack " * 4, " needle in"), ("x", "yz")]
    scores = tiny.loglikelihood(pairs)
    monkeypatch.setattr(tiny, "prefill_chunk", 16)  # prompts of 100+ tokens now take several chunks
    chunks = []

    def spying(original):
        def spy(*args, **kwargs):
            chunks.append(kwargs["chunk_size"])
            return original(*args, **kwargs)

        return spy

    for name in ("generate", "token_logprobs"):
        monkeypatch.setattr(generation, name, spying(getattr(generation, name)))
    assert tiny.generate(prompts, 8) == whole
    for (logprob, greedy), (again, greedy_again) in zip(scores, tiny.loglikelihood(pairs), strict=True):
        assert again == pytest.approx(logprob, abs=1e-4) and greedy_again == greedy
    assert chunks == [16, 16, 16]  # one generate call, one log-likelihood pass per pair


def test_stop_strings_cut_the_continuation(tiny):
    full = tiny.generate(["hello"], 16)[0]
    stop = full[3:5]
    cut = tiny.generate(["hello"], 16, stop=[stop])[0]
    assert cut == full[: full.find(stop)] and stop not in cut


def _next_logprobs(backend, text: str) -> torch.Tensor:
    ids = [backend.config.bos_token_id, *backend.tokenizer.encode(text)]
    with torch.inference_mode():
        return torch.log_softmax(backend.model(torch.tensor([ids]))[0, -1].float(), -1)  # [V]


def test_loglikelihood_sums_token_logprobs_and_flags_greedy(tiny):
    # a context whose greedy next byte is printable ASCII, so the continuation survives decoding as text
    context = next(c for c in (f"The sky is {i}" for i in range(100)) if 32 <= _next_logprobs(tiny, c).argmax() < 127)
    first = _next_logprobs(tiny, context)
    best = chr(int(first.argmax()))
    other = next(ch for ch in "zqxj" if ch != best)
    second = _next_logprobs(tiny, context + best)
    [(lp_best, greedy_best), (lp_other, greedy_other), (lp_two, _)] = tiny.loglikelihood(
        [(context, best), (context, other), (context, best + "a")]
    )
    assert greedy_best is True and greedy_other is False
    assert lp_best == pytest.approx(first.max().item(), abs=1e-4)
    assert lp_other == pytest.approx(first[ord(other)].item(), abs=1e-4)
    assert lp_two == pytest.approx(first.max().item() + second[ord("a")].item(), abs=1e-4)
    assert tiny.loglikelihood([("", "ab")])[0][0] < 0 and tiny.loglikelihood([("x", "")]) == [(0.0, True)]


def test_auto_batch_size_shrinks_with_length(tiny, monkeypatch):
    monkeypatch.setattr(native, "free_memory", lambda device: 64 * 2**20)
    sizes = [tiny.auto_batch_size(n, 128) for n in (1 << 10, 1 << 16, 1 << 20)]
    assert sizes[0] == 8 and sizes == sorted(sizes, reverse=True) and sizes[-1] >= 1
    per_row = tiny.row_bytes((1 << 16) + 128)
    assert sizes[1] == max(1, min(8, math.floor((64 * 2**20 * 0.5 - tiny.prefill_bytes(1 << 16)) // per_row) - 1))


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("tiny", {}, "no weights are shipped for 'tiny'"),
        ("nope", {}, "unknown model 'nope'"),
        ("mmx:", {}, "mmx: needs a checkpoint directory"),
        ("random:tiny:x", {}, "bad seed 'x'"),
        ("random:minimax-text-01", {}, "200064-token vocabulary needs a tokenizer.json"),
        ("random:tiny", {"concurrency": 2}, "option 'concurrency' does not apply to native models"),
        ("random:tiny", {"dtype": "fp8"}, "unknown dtype 'fp8'"),
        ("random:tiny", {"device": "tpu"}, "unknown device 'tpu'"),
        ("random:tiny", {"max_context": 0}, "bad max_context 0"),
    ],
)
def test_bad_specs_and_options_are_one_error(spec, options, message):
    with pytest.raises(MmxError, match=message.replace("(", r"\(").replace("*", r"\*")):
        load_backend(spec, **options)


def test_max_context_option_caps_the_model(tiny):
    assert load_backend("random:tiny", max_context=2048).max_context == 2048
