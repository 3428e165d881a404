"""The sweep runner on a scripted backend: every sample once, resume, context skips, OOM fallback, failing cells."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch

from mmx.errors import MmxError
from mmx.model.tokenizer import ByteTokenizer
from mmx.results.store import SAMPLES_FILE, SUMMARY_FILE, RunStore, sample_key
from mmx.tasks import Sample
from mmx.workflows.evaluate.sweep import Sweep, run_sweep
from mmx.workflows.provenance import run_metadata


class KeyTask:
    """Prompts that state a number; the reference is that number. `min_length` makes shorter cells fail to build."""

    def __init__(self, name: str, min_length: int = 0) -> None:
        self.name = name
        self.min_length = min_length

    def params(self) -> dict:
        return {"name": self.name}

    def samples(self, tokenizer, length: int, n: int, seed: int) -> list[Sample]:
        if length < self.min_length:
            raise MmxError(f"{self.name} needs at least {self.min_length} tokens", "use a longer length")
        out = []
        for i in range(n):
            value = str((seed * 7919 + length * 31 + i * 17) % 1000)
            out.append(Sample(self.name, length, i, f"the key is {value}. " + "." * 10, " key:", [value], 8))
        return out

    def score(self, sample: Sample, prediction: str) -> float:
        return float(sample.references[0] in prediction)


class ScriptedBackend:
    """Answers the key for odd indices only (so scores are neither 0 nor 1), and runs out of memory past a budget of
    batch × length tokens, like a GPU whose KV cache grows with both."""

    def __init__(self, max_context: int = 1 << 20, budget: int | None = None) -> None:
        self.tokenizer = ByteTokenizer()
        self.max_context = max_context
        self.budget = budget
        self.calls: list[tuple[int, int]] = []  # (batch size, length) per generate call

    def generate(self, prompts: list[str], max_new_tokens: int, stop=None) -> list[str]:
        length = int(re.search(r"@(\d+)", prompts[0]).group(1)) if "@" in prompts[0] else 0
        self.calls.append((len(prompts), length))
        if self.budget is not None and len(prompts) * length > self.budget:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        answers = []
        for p in prompts:
            value = re.search(r"key is (\d+)", p).group(1)
            answers.append(value if int(value) % 2 else "no idea")
        return answers

    def loglikelihood(self, pairs):
        return [(0.0, True) for _ in pairs]

    def describe(self) -> dict:
        return {"spec": "scripted", "name": "scripted", "random_weights": False, "device": "cpu"}


class LengthTaggedTask(KeyTask):
    """KeyTask whose prompts carry their length, so the scripted backend can model memory per length."""

    def samples(self, tokenizer, length, n, seed):
        items = super().samples(tokenizer, length, n, seed)
        return [replace(item, prompt=f"@{length} " + item.prompt) for item in items]


def _open(tmp_path, sweep: Sweep, backend) -> RunStore:
    store = RunStore(tmp_path / "run")
    meta = run_metadata("eval", ["mmx", "test"], sweep.suite, backend.describe(), sweep.params(backend.describe()))
    store.open(meta)
    return store


def _sweep(tasks, lengths=(1000, 2000), samples=4, batch_size=2) -> Sweep:
    return Sweep("test", {t.name: t for t in tasks}, list(lengths), samples, seed=3, batch_size=batch_size)


def _lines(store: RunStore) -> list[dict]:
    return [json.loads(line) for line in (store.dir / SAMPLES_FILE).read_text().splitlines() if line.strip()]


def test_every_sample_is_scored_once_and_summarised(tmp_path):
    backend = ScriptedBackend()
    sweep = _sweep([KeyTask("a"), KeyTask("b")])
    store = _open(tmp_path, sweep, backend)
    result = run_sweep(backend, sweep, store)
    lines = _lines(store)
    assert len(lines) == result.new_records == 2 * 2 * 4
    assert len({sample_key(r) for r in lines}) == len(lines)
    assert [(r["length"], r["task"]) for r in lines[::4]] == [(1000, "a"), (1000, "b"), (2000, "a"), (2000, "b")]
    for r in lines:
        assert r["status"] == "ok" and r["score"] == float(int(r["references"][0]) % 2)
        assert r["prediction"] == (r["references"][0] if r["score"] else "no idea")
        assert set(r["timings"]) == {"build_s", "generate_s"} and r["timings"]["generate_s"] >= 0
    assert backend.calls == [(2, 0)] * 8
    summary = (store.dir / SUMMARY_FILE).read_text().splitlines()
    assert summary[0] == "task,length,n,score"
    expected = {}
    for r in lines:
        expected.setdefault((r["task"], r["length"]), []).append(r["score"])
    for row in summary[1:]:
        task, length, n, score = row.split(",")
        scores = expected[(task, int(length))]
        assert int(n) == len(scores) and float(score) == pytest.approx(100 * sum(scores) / len(scores), abs=0.01)


def test_without_an_answer_prefix_prompts_still_fill_the_target_length(tmp_path):
    from mmx.tasks import get_task

    class Silent(ScriptedBackend):
        def generate(self, prompts, max_new_tokens, stop=None):
            return ["" for _ in prompts]

    backend = Silent()
    length = 2048
    runs = {}
    for use_prefix in (True, False):
        task = get_task("niah_single_1", answer_prefix=use_prefix)
        sweep = Sweep("test", {task.name: task}, [length], 1, seed=3, answer_prefix=use_prefix, batch_size=1)
        store = _open(tmp_path / str(use_prefix), sweep, backend)
        run_sweep(backend, sweep, store)
        (runs[use_prefix],) = _lines(store)
    budget = task.samples(backend.tokenizer, length, 1, 3)[0].max_new_tokens
    for record in runs.values():  # prompt + answer budget within RULER's tolerance of the target, prefix or not
        assert length - 32 <= record["prompt_tokens"] + budget <= length
    assert runs[True]["prompt_hash"] != runs[False]["prompt_hash"]


def test_rerun_after_a_torn_write_resumes_without_duplicates(tmp_path):
    backend = ScriptedBackend()
    sweep = _sweep([KeyTask("a"), KeyTask("b")])
    full = run_sweep(backend, sweep, _open(tmp_path / "full", sweep, backend))

    store = _open(tmp_path / "cut", sweep, backend)
    run_sweep(backend, sweep, store)
    path = store.dir / SAMPLES_FILE
    raw = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(raw[:5]) + raw[5][:17])  # as if killed in the middle of writing line 6
    notes = []
    store = RunStore(store.dir, on_corrupt=notes.append)
    again = ScriptedBackend()
    resumed = run_sweep(again, sweep, store)
    assert resumed.new_records == 16 - 5
    assert len(notes) == 1 and ":6: skipping a corrupt line" in notes[0]
    text = path.read_text().splitlines()
    assert text[5] == raw[5][:17].decode()  # the torn fragment stays on a line of its own, the next record intact
    lines = [json.loads(x) for i, x in enumerate(text) if i != 5]
    assert len(lines) == 16 and len({sample_key(r) for r in lines}) == 16
    outcome = lambda records: sorted((sample_key(r), r["prediction"], r["score"]) for r in records)  # noqa: E731
    assert outcome(resumed.records) == outcome(lines) == outcome(full.records)
    assert (store.dir / SUMMARY_FILE).read_text() == (tmp_path / "full" / "run" / SUMMARY_FILE).read_text()


def test_lengths_beyond_the_context_are_skipped_with_a_note(tmp_path):
    backend = ScriptedBackend(max_context=1500)
    sweep = _sweep([KeyTask("a")], lengths=(1000, 2000, 4000))
    notes = []

    class Notes:
        def begin(self, total, done):
            notes.append(("begin", total, done))

        def cell(self, task, length, total, done):
            pass

        def advance(self, count):
            pass

        def note(self, message):
            notes.append(message)

        def end(self):
            pass

    result = run_sweep(backend, sweep, _open(tmp_path, sweep, backend), Notes())
    assert result.lengths == [1000] and result.skipped_lengths == [2000, 4000]
    assert {r["length"] for r in result.records} == {1000}
    assert sum("longer than the model's maximum context" in n for n in notes if isinstance(n, str)) == 2
    assert ("begin", 4, 0) in notes


def test_out_of_memory_halves_the_batch_then_records_the_cell_and_longer_lengths(tmp_path):
    backend = ScriptedBackend(budget=2 * 1000)  # 1000: batch 2 fits; 2000: batch 1 only; 4000, 8000: nothing
    sweep = _sweep([LengthTaggedTask("a"), LengthTaggedTask("b")], lengths=(1000, 2000, 4000, 8000), batch_size=2)
    notes = []

    class Notes:
        begin = cell = advance = end = staticmethod(lambda *a: None)

        @staticmethod
        def note(message):
            notes.append(message)

    result = run_sweep(backend, sweep, _open(tmp_path, sweep, backend), Notes())
    by_cell = {}
    for r in result.records:
        by_cell.setdefault((r["task"], r["length"]), []).append(r)
    assert all(r["status"] == "ok" and r["batch_size"] == 2 for r in by_cell[("a", 1000)])
    assert all(r["status"] == "ok" and r["batch_size"] == 1 for r in by_cell[("a", 2000)])
    for task in "ab":
        assert [r["status"] for r in by_cell[(task, 4000)]] == ["oom"] * 4
        assert [r["status"] for r in by_cell[(task, 8000)]] == ["oom"] * 4
        assert all(r["score"] is None for r in by_cell[(task, 4000)] + by_cell[(task, 8000)])
        assert all(r["error"] == "not run: out of memory at 4000" for r in by_cell[(task, 8000)])
    assert by_cell[("a", 4000)][0]["error"].startswith("CUDA out of memory")
    assert result.oom_from == 4000
    assert (1, 8000) not in backend.calls  # longer lengths are recorded, never tried
    assert (1, 4000) in backend.calls and backend.calls.count((1, 4000)) == 2  # each task tried once at batch 1
    assert any("retrying with batch size 1" in n for n in notes)
    assert len(result.records) == 2 * 4 * 4 and len({sample_key(r) for r in result.records}) == 32


def test_a_cell_that_cannot_be_built_is_recorded_and_the_sweep_goes_on(tmp_path):
    backend = ScriptedBackend()
    sweep = _sweep([KeyTask("short"), KeyTask("long", min_length=1500)])
    result = run_sweep(backend, sweep, _open(tmp_path, sweep, backend))
    failed = [r for r in result.records if r["status"] == "error"]
    assert {(r["task"], r["length"]) for r in failed} == {("long", 1000)}
    assert len(failed) == 4 and "needs at least 1500 tokens" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in result.records) == 12


def test_other_errors_propagate_and_keep_what_was_written(tmp_path):
    class Broken(ScriptedBackend):
        def generate(self, prompts, max_new_tokens, stop=None):
            if len(self.calls) == 2:
                raise RuntimeError("internal bug")
            return super().generate(prompts, max_new_tokens, stop)

    backend = Broken()
    sweep = _sweep([KeyTask("a")])
    store = _open(tmp_path, sweep, backend)
    with pytest.raises(RuntimeError, match="internal bug"):
        run_sweep(backend, sweep, store)
    assert len(_lines(store)) == 4


def test_different_parameters_on_the_same_directory_are_refused(tmp_path):
    backend = ScriptedBackend()
    sweep = _sweep([KeyTask("a")])
    _open(tmp_path, sweep, backend)
    other = _sweep([KeyTask("a")], samples=5)
    with pytest.raises(MmxError, match=r"different parameters \(samples\)"):
        _open(tmp_path, other, backend)
    moved = ScriptedBackend()
    # where it runs, and in what prefill chunks, is not what it computes
    moved.describe = lambda: {**backend.describe(), "device": "cuda:0", "prefill_chunk": 65536}
    assert RunStore(tmp_path / "run").open(
        run_metadata("eval", ["mmx"], "test", moved.describe(), sweep.params(moved.describe()))
    )


def test_weights_known_by_digest_resume_from_another_path_and_others_do_not(tmp_path):
    backend = ScriptedBackend()
    sweep = _sweep([KeyTask("a")])
    for name, digest in (("digest", {"weights_sha256": "abc"}), ("path-only", {})):
        here = {**backend.describe(), "checkpoint": "/home/me/mmx/weights", **digest}
        there = {**here, "checkpoint": "/scratch/copy/weights"}
        store = RunStore(tmp_path / name)
        store.open(run_metadata("eval", ["mmx"], "test", here, sweep.params(here)))
        if digest:
            assert store.open(run_metadata("eval", ["mmx"], "test", there, sweep.params(there)))
        else:
            with pytest.raises(MmxError, match=r"different parameters \(model\)"):
                store.open(run_metadata("eval", ["mmx"], "test", there, sweep.params(there)))
        changed = {**there, **digest, "weights_sha256": "def"}
        with pytest.raises(MmxError, match=r"different parameters \(model\)"):
            store.open(run_metadata("eval", ["mmx"], "test", changed, sweep.params(changed)))


def test_a_run_written_before_the_path_was_unpinned_still_resumes(tmp_path):
    backend = ScriptedBackend()
    sweep = _sweep([KeyTask("a")])
    model = {**backend.describe(), "checkpoint": "/home/me/mmx/weights", "weights_sha256": "abc"}
    old = run_metadata("eval", ["mmx"], "test", model, sweep.params(model))
    old["params"]["model"] = model  # earlier versions recorded every model field, the path included
    store = RunStore(tmp_path / "run")
    store.open(old)
    moved = {**model, "checkpoint": "/scratch/copy/weights", "device": "cuda:0"}
    assert store.open(run_metadata("eval", ["mmx"], "test", moved, sweep.params(moved)))


def test_a_resumed_run_keeps_its_out_of_memory_frontier(tmp_path):
    sweep = _sweep([LengthTaggedTask("a")], lengths=(1000, 2000, 4000), batch_size=1)
    tight = ScriptedBackend(budget=1000)
    full = run_sweep(tight, sweep, _open(tmp_path / "full", sweep, tight))
    store = _open(tmp_path / "cut", sweep, tight)
    run_sweep(tight, sweep, store)
    path = store.dir / SAMPLES_FILE
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))  # killed after the first OOM record
    roomy = ScriptedBackend()  # resumed where memory would suffice: the run still matches its uninterrupted self
    resumed = run_sweep(roomy, sweep, RunStore(store.dir))
    assert all(length < 4000 for _, length in roomy.calls)
    outcome = lambda records: sorted((sample_key(r), r["status"], r["score"]) for r in records)  # noqa: E731
    assert outcome(resumed.records) == outcome(full.records)
