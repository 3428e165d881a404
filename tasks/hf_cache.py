"""Datasets from the Hugging Face Hub, the way Hugging Face users expect, in two uses:

- `load_dataset(name)`, for a dataset a user names: downloaded when online, read from the local caches when
  `HF_DATASETS_OFFLINE` / `HF_HUB_OFFLINE` is set (datasets' and huggingface_hub's own switches, never changed here);
  a dataset that cannot be had is one MmxError saying how to get it.
- `load_cached_dataset(name)`, for data a task uses when it is there (SQuAD for `qa_1`, …): only what this machine
  already holds, online or not, since tasks look for their data whenever they are built (`mmx tasks list` too) and
  fall back to a stand-in without it.

Both caches count: the `datasets` cache that `load_dataset` writes (`$HF_DATASETS_CACHE/org___name/…`) and the hub
cache that `hf download NAME --repo-type dataset` writes (`$HF_HUB_CACHE/datasets--org--name/snapshots/…`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmx.errors import MmxError


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


def offline() -> bool:
    """Whether `datasets` may not reach the Hub: HF_DATASETS_OFFLINE if set, else HF_HUB_OFFLINE."""
    return bool(_datasets().config.HF_HUB_OFFLINE)


def load_dataset(name: str, config: str | None = None, split: str | None = None) -> Any:
    """The `split` (default: the first) of dataset `name`: downloaded when online, else from the local caches."""
    if offline():
        found = load_cached_dataset(name, config, split)
        if found is None:
            raise MmxError(
                f"dataset {name!r} is not in the local Hugging Face caches, and HF_DATASETS_OFFLINE/HF_HUB_OFFLINE "
                "keeps mmx from downloading it",
                f"download it once online (`hf download {name} --repo-type dataset`), or unset the variable",
            )
        return found
    datasets = _datasets()
    try:
        return _split(datasets.load_dataset(name, config), split)
    except ConnectionError as err:  # the Hub is out of reach: what this machine holds still serves
        found = load_cached_dataset(name, config, split)
        if found is not None:
            return found
        raise MmxError(
            f"cannot reach the Hugging Face Hub for dataset {name!r}, and it is not in the local caches ({err})",
            "check your network, or download it where you are online (`hf download NAME --repo-type dataset`)",
        ) from None
    except (FileNotFoundError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MmxError(
            f"cannot load dataset {name!r} from the Hugging Face Hub: {first}",
            "check the name and your network; gated datasets need `hf auth login`",
        ) from None


def load_cached_dataset(name: str, config: str | None = None, split: str | None = None) -> Any | None:
    """The cached `split` (default: the first) of dataset `name` as a `datasets.Dataset`, or None if this machine
    does not hold it (or `datasets` is not installed). Never downloads."""
    if not is_cached(name):
        return None
    try:
        datasets = _datasets()
    except MmxError:
        return None
    for load in (_from_datasets_cache, _from_hub_snapshot):
        try:
            loaded = load(datasets, name, config)
        except Exception:  # noqa: BLE001 - any failure (absent, other config, broken cache) means "not here"
            continue
        if loaded is not None:
            chosen = split or next(iter(loaded))
            return loaded.get(chosen)
    return None


def _from_datasets_cache(datasets: Any, name: str, config: str | None) -> Any:
    """What `load_dataset` left in the datasets cache, read the way datasets reads it offline."""
    with _cache_only(datasets.config):
        return datasets.load_dataset(name, config)


def _from_hub_snapshot(datasets: Any, name: str, config: str | None) -> Any | None:
    """A dataset repository downloaded into the hub cache, loaded as the local folder it is."""
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(name, repo_type="dataset", local_files_only=True)
    return datasets.load_dataset(str(snapshot), config)


@contextmanager
def _cache_only(config: Any) -> Iterator[None]:
    """datasets' offline reading for one call (its config only; the environment and the Hub client are untouched)."""
    saved = config.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE = saved


def _split(loaded: Any, split: str | None) -> Any:
    split = split or next(iter(loaded))
    if split not in loaded:
        raise MmxError(f"the dataset has no split {split!r}", f"it has {', '.join(loaded)}")
    return loaded[split]


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MmxError("Hugging Face datasets need the datasets package", "pip install 'mmx[hf]'") from None
    return datasets
