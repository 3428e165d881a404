"""The kill matrix: each target (`mmx eval` native and `openai:`, `mmx eval lm-eval`, `mmx train`) runs once clean,
then, per trial, is killed at a random point (SIGKILL or Ctrl-C, after a random number of records plus a random
delay, so some signals land mid-write), a second writer is tried on its directory while it runs, and the run is
resumed to the end. The resumed directory is compared with the clean one: records lost, written twice, labelled with
another run, and results (predictions, scores, metrics, weights) that differ.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reliability.common import TRACEBACK, env, mmx_argv, run, run_here
from mmx.results.store import read_jsonl

EVAL_SAMPLES = 6
TRAIN_STEPS = 6
LM_EVAL_DOCS = (
    [("2+2", ["3", "4"], 1), ("sky", ["blue", "green"], 0)],
    [(f"count to {n}", " ".join(map(str, range(1, n + 1)))) for n in range(3, 7)],
)
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
{body}
"""
BODIES = {
    "rel_mc": 'output_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
    'doc_to_choice: "{{choices}}"\ndoc_to_target: answer\nmetric_list:\n  - metric: acc',
    "rel_gen": 'output_type: generate_until\ndoc_to_text: "Q: {{question}}\\nA:"\ndoc_to_target: answer\n'
    'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 32\nmetric_list:\n  - metric: exact_match',
}


@dataclass
class Target:
    """One command to kill: its arguments for a run directory, the file whose lines count its progress (and how
    many it has when done), and what must come out the same after a resume."""

    name: str
    args: Callable[[Path], list[object]]
    progress: str
    total: int
    records: Callable[[Path], list[tuple[Any, ...]]]  # one key per record on disk (duplicates kept)
    result: Callable[[Path], Any]  # everything a resumed run must reproduce exactly
    relabelled: Callable[[Path], int] = lambda _: 0


def _samples(run_dir: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(run_dir / "samples.jsonl", on_corrupt=lambda _: None))


def _relabelled(run_dir: Path) -> int:
    identity = json.loads((run_dir / "run.json").read_text()).get("run_id")
    return sum(1 for r in _samples(run_dir) if r.get("run_id") != identity)


def eval_target(name: str, model_args: list[str]) -> Target:
    def args(out: Path) -> list[object]:
        flags = ["--tasks", "vt", "--lengths", "1k", "--samples", EVAL_SAMPLES, "--batch-size", "1"]
        return ["eval", "ruler", *model_args, *flags, "--quiet", "--json", "--out", out]

    return Target(
        name=name,
        args=args,
        progress="samples.jsonl",
        total=EVAL_SAMPLES,
        records=lambda d: [(r.get("task"), r.get("length"), r.get("index")) for r in _samples(d)],
        result=lambda d: (
            sorted((r["task"], r["length"], r["index"], r["status"], r["prediction"], r["score"]) for r in _samples(d)),
            (d / "summary.csv").read_text(),
        ),
        relabelled=_relabelled,
    )


def lm_eval_target(workdir: Path) -> Target:
    tasks = workdir / "lm-eval-tasks"
    tasks.mkdir(exist_ok=True)
    mc, gen = LM_EVAL_DOCS
    rows = {
        "rel_mc": [{"question": q, "choices": c, "answer": a} for q, c, a in mc],
        "rel_gen": [{"question": q, "answer": a} for q, a in gen],
    }
    for name, docs in rows.items():
        data = tasks / f"{name}.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
        (tasks / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data, body=BODIES[name]))
    requests = sum(len(choices) for _, choices, _ in mc) + len(gen)

    def args(out: Path) -> list[object]:
        flags = ["--tasks", "rel_mc,rel_gen", "--include-path", tasks, "--batch-size", "1"]
        return ["eval", "lm-eval", "--model", "random:tiny", *flags, "--quiet", "--json", "--out", out]

    def answers(d: Path) -> list[tuple[Any, ...]]:
        return [(r.get("key"),) for r in read_jsonl(d / "lm_eval_requests.jsonl", on_corrupt=lambda _: None)]

    return Target(
        name="lm-eval",
        args=args,
        progress="lm_eval_requests.jsonl",
        total=requests,
        records=lambda d: answers(d) + [(r.get("task"), r.get("index")) for r in _samples(d)],
        result=lambda d: (
            json.loads((d / "lm_eval_results.json").read_text()),
            sorted((r["task"], r["index"], r["prediction"], r["score"]) for r in _samples(d)),
        ),
        relabelled=_relabelled,
    )


def train_target() -> Target:
    def args(out: Path) -> list[object]:
        data = ["--data", "niah_single_1,vt", "--min-doc-len", "600", "--batch-tokens", "2k"]
        return ["train", "--out", out, "--model", "tiny", *data, "--stages", f"1k:{TRAIN_STEPS}", "-q",
                "--checkpoint-every", "2"]  # fmt: skip

    def steps(d: Path) -> list[dict[str, Any]]:
        return list(read_jsonl(d / "metrics.jsonl", on_corrupt=lambda _: None))

    return Target(
        name="train",
        args=args,
        progress="metrics.jsonl",
        total=TRAIN_STEPS,
        records=lambda d: [(r.get("step"),) for r in steps(d)],
        result=lambda d: (
            [(r["step"], r["loss"], r["grad_norm"]) for r in steps(d)],
            (d / "model" / "model.safetensors").read_bytes(),
        ),
    )


@dataclass
class KillTally:
    """Counts over every trial of every target."""

    trials: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        c = self.counts
        per = ", ".join(f"{name} {n}" for name, n in self.trials.items())
        return (
            f"{sum(self.trials.values())} trials ({per}): tracebacks {c['tracebacks']} · samples lost {c['lost']} · "
            f"duplicated {c['duplicated']} · relabelled {c['relabelled']} · result mismatches {c['mismatches']} · "
            f"second writers refused {c['second refused']}/{c['second tried']} · resumes failed {c['resume failed']}"
            f" · signals after the run ended {c['missed']}"
        )


def _wait_for(path: Path, lines: int, proc: subprocess.Popen, timeout: float) -> bool:
    """True once `path` has `lines` lines; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _compare(target: Target, clean: Path, resumed: Path, tally: KillTally) -> None:
    keys = target.records(resumed)
    tally.counts["lost"] += len(set(target.records(clean)) - set(keys))
    tally.counts["duplicated"] += len(keys) - len(set(keys))
    tally.counts["relabelled"] += target.relabelled(resumed)
    if target.result(resumed) != target.result(clean):
        tally.counts["mismatches"] += 1
        tally.notes.append(f"{target.name}: {resumed.name} differs from the clean run")


def trial(target: Target, clean: Path, out: Path, workdir: Path, rng: random.Random, tally: KillTally) -> None:
    """Kill one run of `target` at a random point, try a second writer, resume it, and compare with `clean`."""
    tally.trials[target.name] += 1
    after = rng.randrange(1, target.total - 1)  # two records of work left, so the signal finds the run going
    sig = rng.choice([signal.SIGKILL, signal.SIGINT])
    proc = subprocess.Popen(
        mmx_argv(*target.args(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(workdir)
    )
    if _wait_for(out / target.progress, after, proc, timeout=900):
        time.sleep(rng.uniform(0, 0.1))
        second = run_here(target.args(out))
        tally.counts["second tried"] += 1
        refused = second.one_line_error and "is in use by process" in second.err
        finished = second.code == 0 and len(set(target.records(out))) >= target.total  # the first was done already
        tally.counts["second refused"] += refused
        tally.counts["second tried"] -= finished
        tally.counts["tracebacks"] += second.traceback
        if not refused and not finished:
            tally.notes.append(
                f"{target.name}: a second writer was not refused: exit {second.code}, {second.err[-300:]}"
            )
    if proc.poll() is None:
        proc.send_signal(sig)
    else:
        tally.counts["missed"] += 1
    _, err = proc.communicate(timeout=600)
    tally.counts["tracebacks"] += TRACEBACK in err
    again = run(target.args(out), workdir)
    tally.counts["tracebacks"] += again.traceback
    if again.code != 0:
        tally.counts["resume failed"] += 1
        tally.notes.append(f"{target.name}: resume exited {again.code}: {again.err.strip()[-300:]}")
        return
    _compare(target, clean, out, tally)


def kill_phase(workdir: Path, kills: int, seed: int, targets: list[str], served_url: str | None) -> KillTally:
    """`kills` trials of each target in `targets` (eval, eval-openai, lm-eval, train); eval-openai needs a server."""
    rng = random.Random(seed)
    tally = KillTally()
    known = {
        "eval": lambda: eval_target("eval", ["--model", "random:tiny"]),
        "eval-openai": lambda: eval_target("eval-openai", ["--model", f"openai:{served_url}", "--tokenizer", "byte"]),
        "lm-eval": lambda: lm_eval_target(workdir),
        "train": train_target,
    }
    for name in targets:
        if name == "eval-openai" and served_url is None:
            tally.notes.append("eval-openai: skipped, no server")
            continue
        target = known[name]()
        clean = workdir / f"{name}-clean"
        done = run(target.args(clean), workdir)
        tally.counts["tracebacks"] += done.traceback
        if done.code != 0:
            tally.notes.append(f"{name}: the clean run failed ({done.err.strip()[-300:]})")
            continue
        for i in range(kills):
            trial(target, clean, workdir / f"{name}-trial-{i}", workdir, rng, tally)
    return tally
