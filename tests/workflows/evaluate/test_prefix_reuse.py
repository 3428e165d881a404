"""Prefix reuse in sweeps: a cell's shared beginning is prefilled once, predictions equal prefilling each sample alone
(fp32, CPU), and the run records tokens prefilled against read, per sample and per sweep."""

from __future__ import annotations

import json
import random

import pytest
import torch

from mmx.model.backends.base import load_backend
from mmx.results.store import SWEEPS_FILE, RunStore
from mmx.tasks import Sample
from mmx.workflows.evaluate.sweep import Sweep, run_sweep
from mmx.workflows.provenance import run_metadata

HAYSTACK = " ".join(f"w{(i * 7919) % 613}" for i in range(4000))


class NeedleTask:
    """One haystack per length with a key sentence at a different depth in each sample: the prompts of a cell share
    their beginning up to the key, as RULER's do once they share a haystack."""

    name = "needle"
    max_new_tokens = 6

    def params(self) -> dict:
        return {"name": self.name}

    def samples(self, tokenizer, length: int, n: int, seed: int) -> list[Sample]:
        rng = random.Random(seed * 31 + length)
        hay = HAYSTACK[: length - 54 - self.max_new_tokens]
        out = []
        for i in range(n):
            depth = rng.randrange(0, len(hay))
            text = f"{hay[:depth]} The key is {rng.randrange(1000)}. {hay[depth:]}\nWhat is the key?"
            out.append(Sample(self.name, length, i, text, " Key:", ["0"], self.max_new_tokens))
        return out

    def score(self, sample: Sample, prediction: str) -> float:
        return float(sample.references[0] in prediction)


def _run(tmp_path, backend, reuse: bool, lengths=(600, 1200), samples=5, batch_size=2):
    sweep = Sweep("test", {"needle": NeedleTask()}, list(lengths), samples, seed=1, batch_size=batch_size,
                  prefix_reuse=reuse)  # fmt: skip
    store = RunStore(tmp_path / ("on" if reuse else "off"))
    described = backend.describe()
    store.open(run_metadata("eval", ["mmx", "test"], sweep.suite, described, sweep.params(described)))
    return run_sweep(backend, sweep, store), store


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small models: one intra-op thread is as fast, and immune to a busy machine's thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    backend = load_backend("random:tiny")
    backend.model.config.initializer_range = 0.2  # weights large enough that answers depend on the prompt
    backend.model.init_weights(seed=4)
    backend.prefill_chunk = 128  # several chunks per prompt, and branch points inside them
    return backend


@pytest.mark.parametrize("batch_size", [1, 3], ids=["batch1", "batch3"])
def test_a_sweep_with_prefix_reuse_predicts_what_one_without_does(tmp_path, tiny, batch_size):
    on, on_store = _run(tmp_path, tiny, reuse=True, batch_size=batch_size)
    off, _ = _run(tmp_path, tiny, reuse=False, batch_size=batch_size)
    key = lambda r: (r["task"], r["length"], r["index"])  # noqa: E731
    predictions = {key(r): r["prediction"] for r in off.records}
    assert {key(r): r["prediction"] for r in on.records} == predictions
    assert len(set(predictions.values())) > 1  # the model does not answer everything alike
    for result, reused in ((on, True), (off, False)):
        for r in result.records:
            assert r["prefilled_tokens"] + r["read_tokens"] == r["prompt_tokens"]  # what the model read, BOS included
            assert r["timings"]["prefill_s"] > 0
        read = sum(r["read_tokens"] for r in result.records)
        assert (read > 0) == reused
        timing = result.timing
        assert timing.read_tokens == read and timing.prefilled_tokens + read == timing.prompt_tokens
        assert 0 < timing.prefill_s <= timing.generate_s <= timing.wall_s
    assert on.timing.prefilled_tokens < 0.75 * off.timing.prefilled_tokens
    (line,) = [json.loads(x) for x in (on_store.dir / SWEEPS_FILE).read_text().splitlines()]
    assert line["prefix_reuse"] is True and line["new_samples"] == 10
    assert line["read_tokens"] == on.timing.read_tokens and line["wall_s"] > 0


def test_the_shipped_model_predicts_alike_with_and_without_reuse(tmp_path):
    backend = load_backend("mmx-mini")
    backend.prefill_chunk = 256
    on, _ = _run(tmp_path, backend, reuse=True, lengths=(1500,), samples=4, batch_size=4)
    off, _ = _run(tmp_path, backend, reuse=False, lengths=(1500,), samples=4, batch_size=4)
    assert sorted((r["index"], r["prediction"]) for r in on.records) == sorted(
        (r["index"], r["prediction"]) for r in off.records
    )
    assert on.timing.read_tokens > 0


def test_reuse_that_runs_out_of_memory_falls_back_to_separate_prefills(tmp_path, tiny, monkeypatch):
    from mmx.model import prefix

    real_feed = prefix.PrefixWalker.feed
    fails = {"left": 1}

    def feed_once_out_of_memory(self, prompt):
        if fails["left"]:
            fails["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_feed(self, prompt)

    monkeypatch.setattr(prefix.PrefixWalker, "feed", feed_once_out_of_memory)
    on, _ = _run(tmp_path, tiny, reuse=True, lengths=(600,), samples=3, batch_size=1)
    monkeypatch.setattr(prefix.PrefixWalker, "feed", real_feed)
    off, _ = _run(tmp_path, tiny, reuse=False, lengths=(600,), samples=3, batch_size=1)
    assert [r["status"] for r in on.records] == ["ok"] * 3
    assert sorted(r["prediction"] for r in on.records) == sorted(r["prediction"] for r in off.records)
    assert on.timing.read_tokens == 0  # the rest of the cell ran without the walker


def test_the_switch_is_not_part_of_the_run(mmx, tmp_path):
    run = tmp_path / "run"
    args = ["eval", "ruler", "--model", "random:tiny", "--tasks", "niah_single_1", "--lengths", "1k", "--quiet"]
    code, out, err = mmx(*args, "--samples", "3", "--out", run, "--no-prefix-reuse")
    assert code == 0, err
    assert "--no-prefix-reuse" not in json.loads((run / "run.json").read_text())["command"]
    assert "prefilled" in out and "wall" in out
    code, out, err = mmx(*args, "--samples", "3", "--out", run, "--json")  # resumes, with reuse on
    assert code == 0, err
    report = json.loads(out)
    assert report["resumed"] and report["new_samples"] == 0
    lines = (run / SWEEPS_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["prefix_reuse"] is False
