"""The OpenAI-compatible server over the tiny HF model, spoken to over loopback HTTP as any client would."""

from __future__ import annotations

import httpx
import pytest

from mmx.model.backends.base import Backend


def post(server, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url.removesuffix('/v1')}{path}", json=body, timeout=60, **kwargs)


def test_models_lists_the_served_model(hf_server, hf_backend):
    data = httpx.get(f"{hf_server.url}/models").json()["data"]
    assert [card["id"] for card in data] == [hf_backend.describe()["name"]]
    assert data[0]["max_model_len"] == 4096 and data[0]["mmx"]["backend"] == "hf"


def test_tokenizer_endpoints_round_trip(hf_server, hf_backend):
    text = "One of the special magic numbers"
    plain = post(hf_server, "/tokenize", {"prompt": text, "add_special_tokens": False}).json()
    assert plain["tokens"] == hf_backend.tokenizer.encode(text) and plain["count"] == len(plain["tokens"])
    assert post(hf_server, "/tokenize", {"prompt": text}).json()["tokens"] == [1, *plain["tokens"]]
    assert post(hf_server, "/detokenize", {"tokens": plain["tokens"]}).json()["prompt"] == text
    info = httpx.get(f"{hf_server.url.removesuffix('/v1')}/tokenizer_info").json()
    assert (info["eos_token"], info["bos_token"], info["model_max_length"]) == ("</s>", "<s>", 4096)


def test_completions_match_the_backend(hf_server, hf_backend):
    prompts = ["The grass is green.", "Question: which answer is right?"]
    body = {"prompt": prompts, "max_tokens": 8, "temperature": 0}
    answer = post(hf_server, "/v1/completions", body).json()
    assert [c["text"] for c in sorted(answer["choices"], key=lambda c: c["index"])] == hf_backend.generate(prompts, 8)
    assert answer["object"] == "text_completion" and answer["usage"]["prompt_tokens"] > 0
    ids = hf_backend.prompt_ids(prompts[0])
    by_ids = post(hf_server, "/v1/completions", {"prompt": ids, "max_tokens": 8}).json()
    assert by_ids["choices"][0]["text"] == hf_backend.generate([prompts[0]], 8)[0]
    echoed = post(hf_server, "/v1/completions", {"prompt": prompts[0], "max_tokens": 8, "echo": True}).json()
    assert echoed["choices"][0]["text"] == prompts[0] + answer["choices"][0]["text"]


def test_echo_logprobs_give_lm_evals_loglikelihood(hf_server, hf_backend):
    """lm-eval's own `local-completions` parser, fed our response, agrees with the backend's log-likelihood."""
    completions = pytest.importorskip("lm_eval.models.openai_completions")

    context, continuation = [1, *hf_backend.tokenizer.encode("The sky is")], hf_backend.tokenizer.encode(" blue.")
    body = {"prompt": [context + continuation], "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    response = post(hf_server, "/v1/completions", body).json()
    parsed = completions.LocalCompletionsAPI.parse_logprobs(response, ctxlens=[len(context)])
    expected = hf_backend.loglikelihood_tokens([(context, continuation)])
    assert parsed[0][0] == pytest.approx(expected[0][0], abs=1e-5)
    assert parsed[0][1] == expected[0][1]
    logprobs = response["choices"][0]["logprobs"]
    assert logprobs["token_logprobs"][0] is None and len(logprobs["tokens"]) == len(context) + len(continuation) + 1
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"])


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 404, "does not exist"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 5000}, 400, "maximum context length is 4096"),
        ("/v1/completions", {"prompt": 7}, 400, "`prompt` must be"),
        ("/v1/completions", {"prompt": "hi", "stream": True}, 400, "streaming is not supported"),
        ("/v1/completions", {"prompt": "hi", "n": 2}, 400, "only n=1"),
        ("/v1/completions", {"prompt": "hi", "logprobs": 99}, 400, "`logprobs` must be between"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": -1}, 400, "`max_tokens` must be"),
        ("/v1/chat/completions", {"messages": []}, 404, "no endpoint"),
        ("/detokenize", {"tokens": "abc"}, 400, "`tokens` must be"),
    ],
    ids=["model", "too-long", "prompt-type", "stream", "n", "logprobs", "max-tokens", "chat", "detokenize"],
)
def test_bad_requests_get_openai_errors(hf_server, path: str, body: dict, status: int, text: str):
    response = post(hf_server, path, body)
    assert response.status_code == status
    assert text in response.json()["error"]["message"]


def test_invalid_json_is_a_400(hf_server):
    response = httpx.post(f"{hf_server.url}/completions", content=b"{not json", timeout=30)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_api_key_is_required_when_set(hf_backend, live_server):
    with live_server(hf_backend, api_key="sesame") as server:
        assert httpx.get(f"{server.url}/models").status_code == 401
        assert httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert httpx.get(f"{server.url.removesuffix('/v1')}/health").status_code == 200


def test_backends_without_token_scores_refuse_logprobs_clearly(hf_backend, live_server):
    class TextOnly(Backend):
        """What a backend must implement and nothing more."""

        tokenizer = hf_backend.tokenizer
        max_context = 4096
        prefix_ids = hf_backend.prefix_ids
        generate = staticmethod(hf_backend.generate)
        loglikelihood = staticmethod(hf_backend.loglikelihood)

        def describe(self) -> dict:
            return {"name": "text-only"}

    with live_server(TextOnly()) as server:
        ok = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 3}).json()
        assert ok["choices"][0]["text"] == hf_backend.generate(["hi"], 3)[0]
        refused = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 0, "echo": True, "logprobs": 1})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "logprobs_unsupported"
