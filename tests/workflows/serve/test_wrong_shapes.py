"""Property: whatever body a client sends — any JSON, the right fields with the wrong shapes, bytes that are not JSON —
the server answers with a 4xx JSON error or a clean response, never a server error or a dropped connection."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmx.model.backends.base import load_backend

CAP = 4  # the server's token cap: any generation these bodies start is short

scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
small_ints = st.integers(-3, 2**20)
token_lists = st.lists(small_ints, max_size=6)
roles = st.sampled_from(["system", "user", "assistant", "developer", "tool", "wizard", "", "USER"])
contents = (
    st.text(max_size=30)
    | st.none()
    | st.integers()
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", 3]), "text": st.text(max_size=10) | scalars}
        ),
        max_size=3,
    )
)
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": contents}) | values, max_size=4) | values
budgets = st.integers(-2, CAP + 2) | scalars
FIELDS = {
    "prompt": st.text(max_size=30) | token_lists | st.lists(st.text(max_size=10) | token_lists, max_size=3) | values,
    "messages": messages,
    "tokens": token_lists | values,
    "max_tokens": budgets,
    "max_completion_tokens": budgets,
    "logprobs": st.integers(-1, 25) | scalars,
    "top_logprobs": st.integers(-1, 25) | scalars,
    "echo": scalars,
    "stream": st.booleans() | scalars,
    "stream_options": st.fixed_dictionaries({"include_usage": scalars}) | values,
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=20) | values,
    "n": st.integers(-1, 3) | scalars,
    "model": st.sampled_from(["random:tiny", "other"]) | scalars,
    "add_generation_prompt": scalars,
    "continue_final_message": scalars,
    "add_special_tokens": scalars,
    "chat_template": scalars,
    "temperature": scalars,
}
text = st.text(st.characters(codec="utf-8"), max_size=20)
in_vocab = st.lists(st.integers(0, 258), min_size=1, max_size=6)
turns = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": text}),
                 min_size=1, max_size=3)  # fmt: skip
common = {
    "max_tokens": st.integers(0, CAP),
    "stream": st.booleans(),
    "stop": st.lists(st.text(max_size=2), max_size=3),
    "echo": st.booleans(),
}
VALID = {  # bodies the server should answer with 200, before one field is broken
    "/v1/completions": st.fixed_dictionaries(
        {"prompt": text | in_vocab | st.lists(text, min_size=1, max_size=2)},
        optional={**common, "logprobs": st.none() | st.integers(0, 3)},
    ),
    "/v1/chat/completions": st.fixed_dictionaries(
        {"messages": turns},
        optional={**common, "logprobs": st.booleans(), "continue_final_message": st.booleans()},
    ),
    "/tokenize": st.fixed_dictionaries({"prompt": text}) | st.fixed_dictionaries({"messages": turns}),
    "/detokenize": st.fixed_dictionaries({"tokens": in_vocab}),
}
PATHS = list(VALID)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, object]:
    """A path and a body: a valid one with at most one field broken, or anything at all."""
    path = draw(st.sampled_from(PATHS))
    if draw(st.integers(0, 3)) == 0:
        return path, draw(st.fixed_dictionaries({}, optional=FIELDS) | values)
    body = draw(VALID[path])
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(FIELDS)))
        body[field] = draw(FIELDS[field])
    return path, body


@pytest.fixture(scope="module")
def server(tmp_path_factory, live_server):
    template = tmp_path_factory.mktemp("chat") / "chat.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    backend = load_backend("random:tiny", chat_template=str(template))
    with live_server(backend, max_tokens_cap=CAP) as running, httpx.Client(timeout=60) as client:
        running.client = client
        yield running


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n") and "server_error" not in response.text
    else:
        assert isinstance(response.json(), dict)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_any_json_body_gets_a_clean_answer(server, request):
    path, body = request
    check(server.client.post(f"{server.root}{path}", content=json.dumps(body)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=64))
def test_bytes_that_are_not_json_get_a_400(server, path, raw):
    response = server.client.post(f"{server.root}{path}", content=raw)
    check(response)
    try:
        json.loads(raw)
    except ValueError:
        assert response.status_code == 400
