"""The `openai:` backend against mmx's own server on loopback: same answers as the model in-process, and one clear
error (or an OOM the runner understands) for each way a server can fail."""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch

from mmx.errors import MmxError
from mmx.model.backends.base import Prompt, load_backend
from mmx.model.backends.openai import base_url

PROMPTS = [
    "One of the special magic numbers for key-3 is",
    "The grass is green.",
    "Question: which answer is right?",
    "What are all the special magic numbers for key-12 mentioned in the provided text? " * 3,
    "x",
]
FAST = {"retries": 2, "backoff": 0.01}  # retries with waits too short to slow the tests down


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_answers_match_the_model_in_process(hf_server, hf_backend):
    remote = load_backend(f"openai:{hf_server.url}", concurrency=3, batch_size=2)
    assert remote.generate(PROMPTS, 12) == hf_backend.generate(PROMPTS, 12)
    assert remote.generate(PROMPTS, 12, stop=["e"]) == hf_backend.generate(PROMPTS, 12, stop=["e"])
    pairs = [("The grass is", " green."), ("Question: which answer is ", "right? Yes"), ("", "The sky")]
    for (got, greedy), (want, want_greedy) in zip(
        remote.loglikelihood(pairs), hf_backend.loglikelihood(pairs), strict=True
    ):
        assert got == pytest.approx(want, abs=1e-5) and greedy == want_greedy


def test_lengths_are_counted_in_the_servers_tokens(hf_server, hf_backend, hf_dir):
    text = "What are all the special magic numbers for key-12?"
    remote = load_backend(f"openai:{hf_server.url}")
    local = load_backend(f"openai:{hf_server.url}", tokenizer=str(hf_dir))
    assert remote.tokenizer.encode(text) == local.tokenizer.encode(text) == hf_backend.tokenizer.encode(text)
    assert remote.tokenizer.decode(remote.tokenizer.encode(text)) == text
    assert remote.prefix_ids == local.prefix_ids == [1]
    assert load_backend(f"openai:{hf_server.url}", tokenizer="byte").tokenizer.encode("ab") == [97, 98]


def test_describe_carries_the_served_models_description(hf_server, hf_backend):
    info = load_backend(f"openai:{hf_server.url}").describe()
    served = hf_backend.describe()
    assert info["backend"] == "openai" and info["name"] == served["spec"] and info["max_context"] == 4096
    assert info["served"]["path"] == served["path"] and "device" not in info["served"]
    assert info["device"] == "cpu" and info["random_weights"] is False and info["tokenizer"]["type"] == "remote"
    assert (info["api"], info["token_counts"], info["chat_template"]) == ("completions", "remote", None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("http://host:8000/v1/completions", "http://host:8000/v1"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
    ],
)
def test_server_urls_are_normalised(given: str, expected: str):
    assert base_url(given) == expected


def test_a_url_without_a_scheme_is_refused():
    with pytest.raises(MmxError, match="bad server URL"):
        base_url("localhost:8000")


def test_unreachable_server_is_one_clear_error():
    started = time.perf_counter()
    with pytest.raises(MmxError, match=r"cannot reach the model server .*connection refused.*after 3 attempts"):
        load_backend(f"openai:http://127.0.0.1:{free_port()}", **FAST)
    assert time.perf_counter() - started < 10


def test_a_transient_server_error_is_retried(hf_backend, live_server, faulty):
    flaky = faulty(hf_backend, RuntimeError("CUDA hiccup"), times=1)
    with live_server(flaky) as server:
        remote = load_backend(f"openai:{server.url}", **FAST)
        assert remote.generate(PROMPTS[:1], 6) == hf_backend.generate(PROMPTS[:1], 6)
    assert flaky.calls == 2


def test_a_lasting_server_error_gives_up_with_the_servers_message(hf_backend, live_server, faulty):
    with live_server(faulty(hf_backend, RuntimeError("weights corrupted"))) as server:
        remote = load_backend(f"openai:{server.url}", **FAST)
        with pytest.raises(
            MmxError, match=r"failed \(HTTP 500: RuntimeError: weights corrupted\) \(after 3 attempts\)"
        ):
            remote.generate(PROMPTS[:2], 6)


def test_slow_responses_time_out_then_recover(hf_backend, live_server, faulty):
    slow = faulty(hf_backend, "slow", times=1, delay=1.5)
    with live_server(slow) as server:
        remote = load_backend(f"openai:{server.url}", timeout=0.5, retries=0, backoff=0.01)
        with pytest.raises(MmxError, match=r"did not answer within 0.5 s"):
            remote.generate(PROMPTS[:1], 4)
        patient = load_backend(f"openai:{server.url}", timeout=30, **FAST)
        assert patient.generate(PROMPTS[:1], 4) == hf_backend.generate(PROMPTS[:1], 4)


def test_server_out_of_memory_reaches_the_runner_as_oom(hf_backend, live_server, faulty):
    from mmx.model.memory import is_out_of_memory

    failing = faulty(hf_backend, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB"))
    with live_server(failing) as server:
        remote = load_backend(f"openai:{server.url}", **FAST)
        with pytest.raises(torch.OutOfMemoryError, match="ran out of memory") as caught:
            remote.generate(PROMPTS[:1], 4)
    assert is_out_of_memory(caught.value) and failing.calls == 1  # not retried: it would fail the same way


def test_context_too_long_is_not_retried(hf_server):
    remote = load_backend(f"openai:{hf_server.url}", **FAST)
    with pytest.raises(MmxError, match="too long for the server's model.*maximum context length is 4096"):
        remote.generate(["hello"], 5000)


def test_api_key_comes_from_the_environment(hf_backend, live_server, monkeypatch):
    monkeypatch.delenv("MMX_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with live_server(hf_backend, api_key="sesame") as server:
        with pytest.raises(MmxError, match="refused the API key.*OPENAI_API_KEY"):
            load_backend(f"openai:{server.url}", **FAST)
        monkeypatch.setenv("OPENAI_API_KEY", "sesame")
        remote = load_backend(f"openai:{server.url}", **FAST)
        assert remote.api_key_var == "OPENAI_API_KEY" and "sesame" not in str(remote.describe())
        assert remote.generate(PROMPTS[:1], 3) == hf_backend.generate(PROMPTS[:1], 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "gpt-4"}, "does not serve 'gpt-4'"),
        ({"device": "cuda"}, "does not apply to openai: models"),
    ],
    ids=["unknown-model", "device"],
)
def test_bad_options_are_one_clear_error(hf_server, options: dict, message: str):
    with pytest.raises(MmxError, match=message):
        load_backend(f"openai:{hf_server.url}", **options)


# --- chat models ---------------------------------------------------------------------------------------------------

RULER = ["--tasks", "niah_single_1,vt", "--lengths", "1k", "--samples", "2", "--quiet", "--json"]


@pytest.fixture(scope="module")
def chat_server(hf_chat_dir, live_server):
    served = load_backend(f"hf:{hf_chat_dir}", device="cpu", chat_template="auto")
    with live_server(served) as server:
        yield server


def sweep_records(cli, out, *args) -> dict:
    code, _, err = cli(["eval", "ruler", *args, *RULER, "--out", str(out)])
    assert code == 0, err
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {(r["task"], r["index"]): r for r in lines}


def test_chat_over_the_api_matches_the_model_in_process(chat_server, hf_chat_dir, tmp_path, cli):
    local = sweep_records(
        cli, tmp_path / "local", "--model", f"hf:{hf_chat_dir}", "--device", "cpu", "--chat-template", "auto"
    )
    served = sweep_records(cli, tmp_path / "served", "--model", f"openai:{chat_server.url}", "--api", "chat")
    assert local.keys() == served.keys()
    for key, record in local.items():
        for field in ("prediction", "prompt_tokens", "prompt_hash", "score"):
            assert served[key][field] == record[field], (key, field)
    model = json.loads((tmp_path / "served" / "run.json").read_text())["model"]
    assert model["api"] == "chat" and model["chat_template"]["answer_prefix"] == "assistant"
    assert model["token_counts"] == "remote"


def test_a_template_rendered_here_goes_out_as_token_ids(chat_server, hf_chat_dir):
    remote = load_backend(f"openai:{chat_server.url}", api="completions", chat_template="auto")
    local = load_backend(f"hf:{hf_chat_dir}", device="cpu", chat_template="auto")
    prompt = Prompt("What is the special magic number?", " Answer:")
    assert remote.api == "completions" and remote.chat.source == "model"
    assert remote.prompt_ids(prompt) == local.prompt_ids(prompt)
    assert remote.generate([prompt, "plain text"], 8) == local.generate([prompt, "plain text"], 8)


def test_the_api_follows_the_server_and_the_chat_template_option(chat_server, hf_server):
    assert load_backend(f"openai:{chat_server.url}").api == "completions"
    assert load_backend(f"openai:{chat_server.url}", chat_template="auto").api == "chat"
    with pytest.raises(MmxError, match="has no chat template"):  # the server has none, so it is rendered here
        load_backend(f"openai:{hf_server.url}", api="completions", chat_template="auto")
    with pytest.raises(MmxError, match="the server applies its own chat template"):
        load_backend(f"openai:{chat_server.url}", api="chat", chat_template="/some/file.jinja")


def test_without_a_prefill_the_prefix_closes_the_user_turn(chat_server, hf_chat_dir, monkeypatch):
    import mmx.model.backends.openai as backend_module

    def no_messages(self, messages, continue_final, add_generation_prompt=None):
        raise backend_module.RequestFailed("HTTP 400: no messages here", "", transient=False)

    monkeypatch.setattr(backend_module.RemoteTokenizer, "encode_chat", no_messages)
    remote = load_backend(f"openai:{chat_server.url}", api="chat")
    assert remote.chat.prefill == "user_line" and remote.describe()["chat_template"]["answer_prefix"] == "user_line"
    local = load_backend(f"hf:{hf_chat_dir}", device="cpu", chat_template="auto")
    prompt = Prompt("What is the special magic number?", " Answer:")
    as_user = Prompt("What is the special magic number?\nAnswer:")
    assert remote.generate([prompt], 8) == local.generate([as_user], 8)


def test_without_any_tokenizer_lengths_are_a_stated_estimate(chat_server, monkeypatch):
    import mmx.model.backends.openai as backend_module

    text = "The special magic number for key-12 is 4096. " * 20
    exact = len(load_backend(f"openai:{chat_server.url}", api="chat").prompt_ids(Prompt(text)))
    monkeypatch.setattr(backend_module.OpenAIBackend, "_remote_prefix", lambda self: None)
    remote = load_backend(f"openai:{chat_server.url}", api="chat")
    info = remote.describe()
    assert info["token_counts"] == "estimate" and info["tokenizer"]["type"] == "estimate"
    estimate = remote.prompt_length(Prompt(text))
    assert exact / 2 <= estimate <= 2 * exact  # the tiny test vocabulary splits finer than real ones
    with pytest.raises(MmxError, match="log-likelihoods need the server's token ids"):
        remote.loglikelihood([("The sky is", " blue")])
