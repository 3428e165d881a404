"""The `hf:` backend on a tiny local Llama: batching changes nothing, stops cut, log-likelihoods match a forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmx.errors import MmxError
from mmx.model.backends.base import Prompt, load_backend
from mmx.model.backends.common import parse_model_args

PROMPTS = [
    "One of the special magic numbers for key-3 is",
    "The grass is green.",
    "Question: which answer is right?",
    "What are all the special magic numbers for key-12 mentioned in the provided text? " * 3,
    "x",
]


def reference_logprobs(backend, ids: list[int]) -> torch.Tensor:
    """log P(ids[i] | ids[:i]) for i >= 1 from one unpadded forward pass of the raw transformers model."""
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids])).logits[0, :-1].float()  # [T-1, V]
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_batched_generation_equals_one_at_a_time(hf_backend):
    batched = hf_backend.generate(PROMPTS, 12)
    single = [hf_backend.generate([p], 12)[0] for p in PROMPTS]
    assert batched == single
    assert any(batched), "a random model still says something"


def test_generation_follows_the_prompt_layout(hf_backend):
    """Text prompts start with the tokenizer's BOS; `generate_tokens` takes ids verbatim, so both agree."""
    assert hf_backend.prefix_ids == [1]
    ids = hf_backend.prompt_ids(PROMPTS[0])
    assert ids[0] == 1 and ids[1:] == hf_backend.tokenizer.encode(PROMPTS[0])
    new = hf_backend.generate_tokens([ids], 10)[0]
    assert 0 < len(new) <= 10 and hf_backend.eos_ids[0] not in new
    assert hf_backend.tokenizer.decode(new) == hf_backend.generate([PROMPTS[0]], 10)[0]


def test_stop_strings_cut_before_the_stop(hf_backend):
    free = hf_backend.generate(PROMPTS, 16)
    stops = [text[3:5] for text in free if len(text) >= 5][:1]
    assert stops, "need a generated text long enough to pick a stop string from"
    cut = hf_backend.generate(PROMPTS, 16, stop=stops)
    for full, short in zip(free, cut, strict=True):
        assert stops[0] not in short
        assert full.startswith(short)
        assert short == full.split(stops[0])[0]


def test_loglikelihood_matches_an_unpadded_forward(hf_backend):
    pairs = [("The grass is", " green."), ("Question: which answer is", " right? Yes"), ("", "The sky")]
    got = hf_backend.loglikelihood(pairs)
    for (context, continuation), (logprob, _) in zip(pairs, got, strict=True):
        head = hf_backend.tokenizer.encode(context)
        tail = hf_backend.tokenizer.encode(context + continuation)[len(head) :]
        ids = [1, *head, *tail]  # BOS, then the pair; an empty context conditions on BOS alone
        expected = reference_logprobs(hf_backend, ids)[-len(tail) :].sum().item()
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_greedy_flag_is_true_exactly_for_the_greedy_continuation(hf_backend):
    context = "The sky is blue. The grass"
    ids = hf_backend.prompt_ids(context)
    greedy_ids = []
    with torch.inference_mode():
        for _ in range(4):
            logits = hf_backend.model(torch.tensor([ids + greedy_ids])).logits[0, -1]
            greedy_ids.append(int(logits.argmax()))
    (logprob, greedy), (_, other) = hf_backend.loglikelihood_tokens(
        [(ids, greedy_ids), (ids, greedy_ids[:-1] + [(greedy_ids[-1] + 1) % 300])]
    )
    assert greedy and not other
    assert logprob == pytest.approx(reference_logprobs(hf_backend, ids + greedy_ids)[-4:].sum().item(), abs=1e-4)


def test_score_tokens_reports_the_top_choices(hf_backend):
    ids = hf_backend.prompt_ids("The grass is green. The sky")
    scores = hf_backend.score_tokens([ids], top_k=3)[0]
    assert len(scores) == len(ids) - 1
    reference = reference_logprobs(hf_backend, ids)
    for position, score in enumerate(scores):
        assert score.logprob == pytest.approx(reference[position].item(), abs=1e-4)
        assert len(score.top) == 3 and score.top[0][1] >= score.top[1][1] >= score.top[2][1]
        assert score.greedy == (score.top[0][0] == ids[position + 1])


def test_chat_template_lays_out_prompts_not_plain_text(hf_dir: Path, tmp_path: Path):
    backend = load_backend(f"hf:{hf_dir}", device="cpu", chat_template="auto")
    assert backend.tokenizer.decode(backend.prompt_ids(Prompt("hi"))) == "[user] hi\n[assistant] "
    assert backend.prompt_ids("hi") == [1, *backend.tokenizer.encode("hi")]  # plain text stays plain text
    template = tmp_path / "chat.jinja"
    template.write_text("<<{{ messages[0]['content'] }}>>")
    custom = load_backend(f"hf:{hf_dir}", device="cpu", chat_template=str(template))
    assert custom.tokenizer.decode(custom.prompt_ids(Prompt("hi"))) == "<<hi>>"
    assert custom.describe()["chat_template"]["source"] == str(template)


def test_describe_says_what_ran(hf_backend, hf_dir: Path):
    info = hf_backend.describe()
    assert info["spec"] == f"hf:{hf_dir}" and info["backend"] == "hf"
    assert info["path"] == str(hf_dir.resolve()) and info["model_type"] == "llama"
    assert (info["dtype"], info["device"], info["max_context"]) == ("fp32", "cpu", 4096)
    assert info["random_weights"] is False and info["parameters"] > 0


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("hf:/no/such/model-dir", {}, "neither a local directory nor a Hugging Face model name"),
        ("hf:", {}, "needs a model directory"),
        ("hf:HF_DIR", {"concurrency": 2}, "does not apply to hf: models"),
        ("hf:HF_DIR", {"dtype": "fp8"}, "unknown dtype"),
        ("hf:HF_DIR", {"chat_template": "/no/such.jinja"}, "chat template /no/such.jinja not found"),
    ],
    ids=["missing-dir", "empty", "foreign-option", "bad-dtype", "missing-template"],
)
def test_bad_specs_are_one_clear_error(hf_dir: Path, spec: str, options: dict, message: str):
    with pytest.raises(MmxError, match=message):
        load_backend(spec.replace("HF_DIR", str(hf_dir)), **options)


def test_a_directory_without_a_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(MmxError, match="cannot load a causal LM"):
        load_backend(f"hf:{tmp_path}")


def test_too_long_prompts_are_refused(hf_backend):
    with pytest.raises(MmxError, match="exceeds the model's context of 4096"):
        hf_backend.generate_tokens([[5] * 4090], 10)


def test_a_prefill_scope_computes_a_shared_beginning_once(hf_backend):
    """Prompts sharing a long beginning, one kept K/V cache cut back between them: the same greedy text as batched
    generation without the scope, with the shared tokens read instead of prefilled."""
    hay = " ".join(f"key-{i} is {1000 * i + 7}." for i in range(40))
    prompts = [f"{hay[:d]} The special magic number is {d}. {hay[d:]} Which number?" for d in (500, 120, 300)]
    alone = hf_backend.generate(prompts, 10)
    with hf_backend.prefill_scope(prompts) as log:
        shared = hf_backend.generate(prompts, 10)
        stops = [t[2:4] for t in alone if len(t) >= 4][:1]
        cut = hf_backend.generate(prompts, 10, stop=stops)
    assert shared == alone and any(alone)
    assert cut == [t.split(stops[0])[0] for t in alone]
    assert sum(log.read) > 0 and all(r + p == len(hf_backend.prompt_ids(t)) for r, p, t in
                                     zip(log.read, log.prefilled, prompts, strict=True))  # fmt: skip
    with hf_backend.prefill_scope(prompts, reuse=False) as off:
        assert off is None and hf_backend.generate(prompts, 10) == alone


def test_models_come_from_the_hub_cache_by_name(hf_dir: Path, tmp_path: Path, monkeypatch):
    """A model `hf download` put in the hub cache loads by name offline, and records the snapshot it came from."""
    import shutil

    from huggingface_hub import constants

    commit = "c" * 40
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / commit
    shutil.copytree(hf_dir, snapshot)
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    backend = load_backend("hf:acme/tiny", device="cpu")
    info = backend.describe()
    assert (info["name"], info["path"], info["revision"]) == ("acme/tiny", str(snapshot), commit)
    with pytest.raises(MmxError, match=r"not in the local Hugging Face cache \(HF_HUB_OFFLINE is set\).*hf download"):
        load_backend("hf:acme/absent", device="cpu")


def test_model_args_reach_from_pretrained_and_the_config(hf_dir: Path):
    args = 'attn_implementation=eager,rope_scaling={"rope_type":"linear","factor":2.0},max_position_embeddings=8192'
    backend = load_backend(f"hf:{hf_dir}", device="cpu", model_args=parse_model_args(args))
    config = backend.model.config
    assert config._attn_implementation == "eager" and backend.max_context == 8192
    rope = config.rope_parameters
    assert (rope["rope_type"], rope["factor"]) == ("linear", 2.0) and rope["rope_theta"] > 0  # theta kept
    assert backend.describe()["model_args"]["attn_implementation"] == "eager"
    with pytest.raises(MmxError, match="dtype is given twice"):
        load_backend(f"hf:{hf_dir}", device="cpu", dtype="fp32", model_args={"torch_dtype": "float32"})
    with pytest.raises(MmxError, match="--model-args config is set by mmx"):
        load_backend(f"hf:{hf_dir}", device="cpu", model_args={"config": "other"})
