"""Hugging Face datasets as their users expect: both local caches found (what `load_dataset` wrote and what
`hf download --repo-type dataset` wrote), HF_HUB_OFFLINE / HF_DATASETS_OFFLINE honoured and never forced, and a dataset
that cannot be had offline is one line saying how to get it. Nothing reaches the network: online, a stand-in for the
Hub refuses every call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
hub_constants = pytest.importorskip("huggingface_hub.constants")

from mmx.errors import MmxError  # noqa: E402
from mmx.tasks import hf_cache  # noqa: E402

ROWS = {"question": ["2+2?", "Sky?"], "answer": ["4", "blue"]}


@pytest.fixture
def caches(tmp_path: Path, monkeypatch):
    """Empty hub and datasets caches of this test's own, with `acme/arrowqa` written by `datasets` and
    `acme/hubqa` downloaded as a hub snapshot; offline unless a test says otherwise."""
    hub, arrow = tmp_path / "hub", tmp_path / "datasets"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(arrow))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", arrow)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    from datasets.packaged_modules.parquet.parquet import Parquet

    source = tmp_path / "source.parquet"
    datasets.Dataset.from_dict(ROWS).to_parquet(source)
    builder = Parquet(dataset_name="arrowqa", config_name="default", data_files={"test": str(source)}, hash="0" * 16)
    builder.download_and_prepare()
    (prepared,) = arrow.glob("arrowqa/default-*")  # datasets' own layout for a Hub dataset: org___name/config/…
    (arrow / "acme___arrowqa").mkdir()
    prepared.rename(arrow / "acme___arrowqa" / "default")

    snapshot = hub / "datasets--acme--hubqa" / "snapshots" / ("a" * 40)
    (snapshot / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(ROWS).to_parquet(snapshot / "data" / "test-00000-of-00001.parquet")
    (hub / "datasets--acme--hubqa" / "refs").mkdir()
    (hub / "datasets--acme--hubqa" / "refs" / "main").write_text("a" * 40)
    return tmp_path


@pytest.mark.parametrize("name", ["acme/arrowqa", "acme/hubqa"])
def test_offline_both_caches_are_found(caches, name):
    for load in (hf_cache.load_cached_dataset, hf_cache.load_dataset):
        rows = load(name, split="test")
        assert rows["question"] == ROWS["question"] and rows["answer"] == ROWS["answer"]


def test_offline_a_missing_dataset_says_how_to_get_it(caches):
    assert hf_cache.load_cached_dataset("acme/absent") is None
    with pytest.raises(MmxError, match=r"not in the local Hugging Face caches.*hf download acme/absent"):
        hf_cache.load_dataset("acme/absent")


def test_online_mmx_asks_the_hub_and_forces_nothing(caches, monkeypatch):
    """Online, `datasets` is asked as it is (offline mode stays off, the environment untouched); the Hub is out of
    reach here — a stand-in refuses every online call the way datasets does — so the local cache serves."""
    real_load = datasets.load_dataset
    asked_online: list[str] = []

    def hub_out_of_reach(path, *args, **kwargs):
        if not datasets.config.HF_HUB_OFFLINE and not Path(path).is_dir():
            asked_online.append(path)
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (ConnectError)")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub_out_of_reach)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    environment = dict(os.environ)
    assert not hf_cache.offline()
    assert hf_cache.load_dataset("acme/arrowqa", split="test")["answer"] == ROWS["answer"]
    assert hf_cache.load_dataset("acme/hubqa", split="test")["answer"] == ROWS["answer"]
    with pytest.raises(MmxError, match="cannot reach the Hugging Face Hub for dataset 'acme/absent'"):
        hf_cache.load_dataset("acme/absent")
    assert asked_online == ["acme/arrowqa", "acme/hubqa", "acme/absent"]
    assert datasets.config.HF_HUB_OFFLINE is False and dict(os.environ) == environment
