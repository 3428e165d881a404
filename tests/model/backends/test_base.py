"""The declared base of every backend: optional token-level capabilities are found with `supports`, and a caller
that uses one a backend lacks gets one clear error, not a traceback."""

from __future__ import annotations

import pytest

from mmx.errors import MmxError
from mmx.model.backends.base import TOKEN_METHODS, Backend, load_backend


class _TextOnly(Backend):
    """A backend with only the required methods, as a plugin author would first write one."""

    tokenizer = None
    max_context = 1024

    def generate(self, prompts, max_new_tokens, stop=None):
        return ["" for _ in prompts]

    def describe(self):
        return {"spec": "text-only"}


def test_supports_names_what_a_backend_implements():
    native = load_backend("random:tiny")
    assert all(native.supports(method) for method in TOKEN_METHODS)
    assert not any(_TextOnly().supports(method) for method in TOKEN_METHODS)
    with pytest.raises(ValueError, match="not an optional backend method"):
        native.supports("generate")


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda b: b.generate_tokens([[1, 2]], 3), "generate from token ids"),
        (lambda b: b.loglikelihood_tokens([([1], [2])]), "score token ids"),
        (lambda b: b.score_tokens([[1, 2]]), "score positions"),
    ],
)
def test_a_capability_the_backend_lacks_is_one_error(call, what):
    with pytest.raises(MmxError, match=f"_TextOnly cannot {what}"):
        call(_TextOnly())
