"""Every model under test behind one interface: native MiniMax models, Hugging Face causal LMs, OpenAI-compatible
servers. `load_backend(spec, **options)` builds one from a spec string; each backend is a sibling module over
`base.Backend`, sharing the helpers in `common`."""

from mmx.model.backends.base import (
    TOKEN_METHODS,
    Backend,
    Prompt,
    Tokenizer,
    TokenScore,
    load_backend,
    register_backend,
)

__all__ = ["TOKEN_METHODS", "Backend", "Prompt", "TokenScore", "Tokenizer", "load_backend", "register_backend"]
