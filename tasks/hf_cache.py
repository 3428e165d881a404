"""Read a dataset from the local Hugging Face cache, strictly offline: a dataset that is not there is simply absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_FLAGS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@contextmanager
def _offline(config: Any) -> Iterator[None]:
    """Force offline mode in the environment and in `datasets.config`, then put both back as they were."""
    saved_env = {flag: os.environ.get(flag) for flag in _FLAGS}
    saved_config = {flag: getattr(config, flag, None) for flag in _FLAGS}
    os.environ.update(dict.fromkeys(_FLAGS, "1"))
    for flag in _FLAGS:
        setattr(config, flag, True)
    try:
        yield
    finally:
        for flag, value in saved_env.items():
            if value is None:
                os.environ.pop(flag, None)
            else:
                os.environ[flag] = value
        for flag, value in saved_config.items():
            setattr(config, flag, value)


def _cache_roots() -> list[Path]:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [
        Path(os.environ.get("HF_HUB_CACHE", home / "hub")),
        Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")),
    ]


def is_cached(name: str) -> bool:
    """Whether `name` (e.g. "rajpurkar/squad_v2") has anything in the local caches; cheap, imports nothing."""
    owner, _, repo = name.rpartition("/")
    hub = "datasets--" + name.replace("/", "--")
    arrow = f"{owner}___{repo}" if owner else repo
    return any((root / hub).is_dir() or (root / arrow).is_dir() for root in _cache_roots())


def load_cached_dataset(name: str, config: str | None = None, split: str | None = None) -> Any | None:
    """The cached `split` (default: the first one) of dataset `name` as a `datasets.Dataset`, or None if unavailable."""
    if not is_cached(name):
        return None
    try:
        import datasets
    except ImportError:
        return None
    with _offline(datasets.config):
        try:
            loaded = datasets.load_dataset(name, config)
        except Exception:  # noqa: BLE001 - any failure (not cached, unknown name, broken cache) means "not available"
            return None
    split = split or next(iter(loaded))
    return loaded.get(split)
