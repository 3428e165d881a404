"""The OpenAI-compatible server, spoken to over loopback HTTP as clients do: raw requests (httpx), the official
`openai` package, and lm-eval's own response parser."""

from __future__ import annotations

import httpx
import openai
import pytest

from mmx.model.backends.base import Backend, Prompt, load_backend


def post(server, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.root}{path}", json=body, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def chat_backend(hf_chat_dir):
    return load_backend(f"hf:{hf_chat_dir}", device="cpu", chat_template="auto")


@pytest.fixture(scope="module")
def chat_server(chat_backend, live_server):
    with live_server(chat_backend) as server:
        yield server


@pytest.fixture(scope="module")
def client(chat_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=chat_server.url, api_key="unused", max_retries=0)


def model_id(server) -> str:
    return server.server.service.model_name


def test_models_lists_the_served_model_under_a_stable_id(hf_server, hf_dir, live_server):
    card = httpx.get(f"{hf_server.url}/models").json()["data"][0]
    assert card["id"] == f"hf:{hf_dir}" and card["max_model_len"] == 4096 and card["mmx"]["backend"] == "hf"
    with live_server(load_backend("random:tiny"), model_name="tiny-test") as native:
        cards = httpx.get(f"{native.url}/models").json()["data"]
        assert [c["id"] for c in cards] == ["tiny-test"]
        assert cards[0]["capabilities"] == {"completions": True, "chat": False}


def test_tokenizer_endpoints_round_trip(hf_server, hf_backend):
    text = "One of the special magic numbers"
    plain = post(hf_server, "/tokenize", {"prompt": text, "add_special_tokens": False}).json()
    assert plain["tokens"] == hf_backend.tokenizer.encode(text) and plain["count"] == len(plain["tokens"])
    assert post(hf_server, "/tokenize", {"prompt": text}).json()["tokens"] == [1, *plain["tokens"]]
    assert post(hf_server, "/detokenize", {"tokens": plain["tokens"]}).json()["prompt"] == text
    info = httpx.get(f"{hf_server.root}/tokenizer_info").json()
    assert (info["eos_token"], info["bos_token"], info["model_max_length"]) == ("</s>", "<s>", 4096)


def test_tokenize_lays_out_conversations_like_the_backend(chat_server, chat_backend):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]
    body = {"messages": messages, "add_generation_prompt": False, "continue_final_message": True}
    tokens = post(chat_server, "/tokenize", body).json()["tokens"]
    assert tokens == chat_backend.prompt_ids(Prompt("Hi", "The answer is"))
    both = post(chat_server, "/tokenize", {**body, "add_generation_prompt": True})
    assert both.status_code == 400 and "cannot both be true" in both.json()["error"]["message"]


def test_completions_match_the_backend(hf_server, hf_backend):
    prompts = ["The grass is green.", "Question: which answer is right?"]
    body = {"prompt": prompts, "max_tokens": 8, "temperature": 0}
    answer = post(hf_server, "/v1/completions", body).json()
    assert [c["text"] for c in sorted(answer["choices"], key=lambda c: c["index"])] == hf_backend.generate(prompts, 8)
    assert answer["object"] == "text_completion"
    assert answer["usage"]["prompt_tokens"] == sum(len(hf_backend.prompt_ids(p)) for p in prompts)
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


def test_the_openai_client_chats_and_completes(client, chat_server, chat_backend):
    name = model_id(chat_server)
    messages = [{"role": "user", "content": "What is the special magic number?"}]
    reply = client.chat.completions.create(model=name, messages=messages, max_tokens=6)
    expected = chat_backend.generate([Prompt(messages[0]["content"])], 6)[0]
    assert reply.choices[0].message.content == expected and reply.choices[0].message.role == "assistant"
    prompt_ids = chat_backend.prompt_ids(Prompt(messages[0]["content"]))
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens == len(chat_backend.generate_tokens([prompt_ids], 6)[0]) <= 6

    text = client.completions.create(model=name, prompt="The grass is", max_tokens=5)
    assert text.choices[0].text == chat_backend.generate(["The grass is"], 5)[0]
    assert text.usage.completion_tokens <= 5


def test_an_assistant_prefix_is_continued(client, chat_server, chat_backend):
    messages = [{"role": "user", "content": "Name the number."}, {"role": "assistant", "content": "The number is"}]
    reply = client.chat.completions.create(
        model=model_id(chat_server),
        messages=messages,
        max_tokens=6,
        extra_body={"add_generation_prompt": False, "continue_final_message": True, "echo": True},
    )
    continued = chat_backend.generate([Prompt("Name the number.", "The number is")], 6)[0]
    assert reply.choices[0].message.content == "The number is" + continued


def test_streams_carry_the_same_answer(client, chat_server, chat_backend):
    name = model_id(chat_server)
    messages = [{"role": "user", "content": "Say something."}]
    whole = client.chat.completions.create(model=name, messages=messages, max_tokens=12)
    chunks = list(
        client.chat.completions.create(
            model=name, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens

    full = client.completions.create(model=name, prompt="The grass is", max_tokens=12).choices[0].text
    stop = full[2:4]
    streamed = client.completions.create(model=name, prompt="The grass is", max_tokens=12, stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full.split(stop)[0]


def test_logprobs_over_chat_and_streams(client, chat_server):
    name = model_id(chat_server)
    messages = [{"role": "user", "content": "Hello"}]
    reply = client.chat.completions.create(model=name, messages=messages, max_tokens=4, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in content)
    assert all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.logprob for t in content)
    streamed = client.chat.completions.create(model=name, messages=messages, max_tokens=4, logprobs=True, stream=True)
    pieces = [c.choices[0] for c in streamed if c.choices and c.choices[0].logprobs]
    assert [t.logprob for p in pieces for t in p.logprobs.content] == pytest.approx([t.logprob for t in content])


def test_a_native_model_reports_logprobs_and_counts_its_tokens(live_server):
    native = load_backend("random:tiny")
    with live_server(native) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        answer = client.completions.create(model="random:tiny", prompt="Hi", max_tokens=5, logprobs=2, echo=True)
        assert answer.model == "random:tiny" and answer.usage.completion_tokens <= 5
        assert answer.usage.prompt_tokens == 3  # BOS + two bytes
        logprobs = answer.choices[0].logprobs
        assert logprobs.token_logprobs[0] is None and len(logprobs.tokens) == 3 + answer.usage.completion_tokens
        expected = native.score_tokens([native.prompt_ids("Hi")], top_k=2)[0]
        assert logprobs.token_logprobs[1:3] == pytest.approx([s.logprob for s in expected])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "text"),
    [
        ("POST", "/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 404, "does not exist"),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 4095}, 400, "maximum context length is 4096"),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 10**6}, 400, "over this server's limit"),
        ("POST", "/v1/completions", {"prompt": 7}, 400, "`prompt` must be"),
        ("POST", "/v1/completions", {"prompt": [5, 99999]}, 400, "outside the vocabulary"),
        ("POST", "/v1/completions", {"prompt": "hi", "n": 2}, 400, "only n=1"),
        ("POST", "/v1/completions", {"prompt": "hi", "logprobs": 99}, 400, "`logprobs` must be between"),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": -1}, 400, "`max_tokens` must be"),
        (
            "POST",
            "/v1/completions",
            {"prompt": "hi", "stream_options": {"include_usage": True}},
            400,
            "needs `stream: true`",
        ),
        ("POST", "/v1/chat/completions", {"messages": []}, 400, "`messages` must be"),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ("POST", "/detokenize", {"tokens": "abc"}, 400, "`tokens` must be"),
        ("PUT", "/v1/completions", {"prompt": "hi"}, 405, "Method Not Allowed"),
        ("GET", "/v1/nothing", None, 404, "no such endpoint"),
    ],
    ids=[
        "model",
        "too-long",
        "over-cap",
        "prompt-type",
        "out-of-vocabulary",
        "n",
        "logprobs",
        "max-tokens",
        "stream-options",
        "no-messages",
        "role",
        "detokenize",
        "wrong-method",
        "unknown-route",
    ],
)
def test_bad_requests_get_openai_errors(hf_server, method, path, body, status, text):
    response = httpx.request(method, f"{hf_server.root}{path}", json=body, timeout=60)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert text in response.json()["error"]["message"]


def test_chat_needs_a_template(hf_backend, live_server):
    with live_server(hf_backend) as server:  # loaded without --chat-template
        response = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 400 and response.json()["error"]["code"] == "chat_template_missing"


def test_invalid_json_is_a_400(hf_server):
    response = httpx.post(f"{hf_server.url}/completions", content=b"{not json", timeout=30)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_api_key_is_required_on_every_route(chat_backend, live_server):
    with live_server(chat_backend, api_key="sesame") as server:
        for path in ("/v1/models", "/health", "/tokenizer_info"):
            assert httpx.get(f"{server.root}{path}").status_code == 401
        wrong = httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url, api_key="nope", max_retries=0).models.list()
        allowed = openai.OpenAI(base_url=server.url, api_key="sesame", max_retries=0)
        assert [m.id for m in allowed.models.list().data] == [model_id(server)]
        reply = allowed.chat.completions.create(
            model=model_id(server), messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.usage.completion_tokens <= 2


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
        streamed = httpx.post(
            f"{server.url}/completions", json={"prompt": "hi", "max_tokens": 3, "stream": True}, timeout=60
        )
        assert ok["choices"][0]["text"] in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
        refused = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 0, "echo": True, "logprobs": 1})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "logprobs_unsupported"
