"""The one interface every model under test implements, and the registry that turns a model spec string into one.

Spec strings: a preset name with shipped weights (the embedded default), `mmx:PATH` (a native checkpoint directory),
`random:PRESET[:SEED]` (random weights, for smoke tests and speed), `hf:PATH_OR_NAME`, `openai:URL`. Each prefix is
registered by the module that implements it, so `load_backend` stays ignorant of transformers, HTTP and the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from mmx.errors import MmxError


@runtime_checkable
class Tokenizer(Protocol):
    """What tasks need of a tokenizer: sizes are always counted in these tokens."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@runtime_checkable
class Backend(Protocol):
    """A model under test. `generate` is greedy; `describe` is recorded in every run's `run.json`."""

    tokenizer: Tokenizer
    max_context: int

    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None = None) -> list[str]: ...

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): the continuation's summed log-probability and whether it is greedy."""
        ...

    def describe(self) -> dict[str, Any]: ...


BackendFactory = Callable[..., Backend]
_FACTORIES: dict[str, BackendFactory] = {}
_LOADERS: dict[str, str] = {}  # prefix -> module that registers it when imported


def register_backend(prefix: str, factory: BackendFactory) -> None:
    """Make `prefix:REST` specs build a backend with `factory(REST, **options)`."""
    _FACTORIES[prefix] = factory


def register_lazy(prefix: str, module: str) -> None:
    """Name the module that registers `prefix`, imported only when such a spec is used (keeps imports light)."""
    _LOADERS[prefix] = module


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend a spec string names; bad specs are one clear MmxError."""
    import importlib

    prefix, sep, rest = spec.partition(":")
    if not sep or (len(prefix) == 1 and rest.startswith("\\")):  # a bare name (or a Windows drive path)
        prefix, rest = "name", spec
    if prefix not in _FACTORIES and prefix in _LOADERS:
        importlib.import_module(_LOADERS[prefix])
    if prefix not in _FACTORIES:
        known = ", ".join(sorted({*_FACTORIES, *_LOADERS} - {"name"}))
        raise MmxError(f"unknown model spec {spec!r}", f"use a preset name or one of the prefixes {known}")
    return _FACTORIES[prefix](rest, **options)


register_lazy("name", "mmx.model.native_backend")
register_lazy("mmx", "mmx.model.native_backend")
register_lazy("random", "mmx.model.native_backend")
register_lazy("hf", "mmx.model.hf_backend")
register_lazy("openai", "mmx.model.openai_backend")
