"""The bad-file matrix: the damaged, mistyped and hostile inputs a user can feed mmx (named cases, each from a real
report), then generated ones (random mutations of a checkpoint's config.json, a run's run.json and its samples.jsonl).
Every case runs the real CLI entry and is checked for: a traceback, an exit code other than the expected one, an
error that is not one line, a user's file touched, and samples lost or relabelled.
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reliability.common import TRACEBACK, Ran, env, mmx_argv, run_here
from mmx.files import line_problem
from mmx.results.schema import SampleRecord
from mmx.results.store import RunStore

EVAL = ["eval", "ruler", "--model", "random:tiny", "--tasks", "vt", "--lengths", "1k", "--samples", "2", "--quiet"]
ERROR, OK = "error", "ok"
CONFIG_DAMAGE = {  # config.json contents that must be refused (the name says how)
    "a list": [1, 2],
    "hidden_size '64'": {"hidden_size": "64"},
    "hidden_size -64": {"hidden_size": -64},
    "hidden_size 64.5": {"hidden_size": 64.5},
    "max_position_embeddings '1m'": {"max_position_embeddings": "1m"},
    "an empty object": {},
}


@dataclass
class Outcome:
    """What a case found wrong, beyond how the command ended."""

    touched: int = 0  # a user's (or a run's own) files changed by a refused command
    lost: int = 0
    relabelled: int = 0


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)  # named, generated
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, kind: str, ran: Ran, expect: str, outcome: Outcome) -> None:
        self.cases[kind] += 1
        wrong_exit = (expect == ERROR and ran.code != 2) or (expect == OK and ran.code != 0) or ran.code not in (0, 2)
        multi_line = ran.code == 2 and not ran.one_line_error
        found = {
            "tracebacks": ran.traceback,
            "wrong exits": wrong_exit and not ran.traceback,
            "multi-line errors": multi_line and not ran.traceback,
            "files touched": outcome.touched,
            "lost": outcome.lost,
            "relabelled": outcome.relabelled,
        }
        for key, value in found.items():
            self.counts[key] += int(value)
        if any(found.values()):
            self.notes.append(f"{name}: exit {ran.code}; {ran.err.strip().splitlines()[-1:] or ['(no stderr)']}")

    def line(self) -> str:
        c = self.counts
        per = ", ".join(f"{n} {kind}" for kind, n in self.cases.items())
        return (
            f"{sum(self.cases.values())} cases ({per}): tracebacks {c['tracebacks']} · wrong exit codes "
            f"{c['wrong exits']} · multi-line errors {c['multi-line errors']} · files touched {c['files touched']} · "
            f"samples lost {c['lost']} · relabelled {c['relabelled']}"
        )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), hidden lock files aside."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".mmx-lock")
    }


def changed(before: dict[str, bytes], folder: Path) -> int:
    after = snapshot(folder) if folder.exists() else {}
    return sum(1 for key in {*before, *after} if before.get(key) != after.get(key))


def samples_of(run_dir: Path) -> list[tuple[Any, ...]]:
    records = RunStore(run_dir, on_corrupt=lambda _: None).samples()
    return sorted((r["task"], r["length"], r["index"], r.get("prediction"), r.get("score")) for r in records)


def kept_samples(base: Path, run_dir: Path) -> Outcome:
    """A damaged copy of `base` after a command: each of base's samples must still be read back, unchanged."""
    have = set(samples_of(run_dir)) if (run_dir / "run.json").exists() else set()
    return Outcome(lost=len(set(samples_of(base)) - have))


class Cases:
    """The named cases, built in `workdir` around a finished tiny run `base`."""

    def __init__(self, workdir: Path, base: Path, tally: Tally) -> None:
        self.dir = workdir
        self.base = base
        self.tally = tally
        self.count = 0

    def folder(self, name: str) -> Path:
        self.count += 1
        path = self.dir / f"case-{self.count:03d}"
        path.mkdir()
        return path

    def copy_run(self, where: Path) -> Path:
        return Path(shutil.copytree(self.base, where / "run"))

    def check(self, name: str, args: list[object], expect: str, protect: Path | None = None, cwd: Path | None = None,
              after: Callable[[Ran], Outcome] | None = None) -> Ran:  # fmt: skip
        """Run one case; files under `protect` must come out unchanged when the command is refused."""
        before = snapshot(protect) if protect is not None else {}
        ran = run_here(args, cwd=cwd)
        outcome = after(ran) if after is not None else Outcome()
        if protect is not None and ran.code != 0:
            outcome.touched += changed(before, protect)
        self.tally.add(name, "named", ran, expect, outcome)
        return ran

    # --- --out and report outputs ---------------------------------------------------------------------------------
    def outputs(self) -> None:
        mine = self.folder("out-user-folder") / "mine"
        mine.mkdir()
        (mine / "summary.csv").write_text("mine\n")
        self.check("--out into a user's folder", [*EVAL, "--out", mine], ERROR, protect=mine)
        self.check("--out '' in a user's folder", [*EVAL, "--out", ""], ERROR, protect=mine, cwd=mine)
        self.check("--out of 300 characters", [*EVAL, "--out", self.dir / ("a" * 300)], ERROR)
        where = self.folder("report-outputs")
        run = self.copy_run(where)
        self.check("report R --csv R", ["report", run, "--csv", run, "--quiet"], ERROR, protect=run)
        notes = where / "notes.html"
        notes.write_text("<html>my notes</html>")
        self.check("report --html over a user's file", ["report", run, "--html", notes], ERROR, protect=where)
        self.check("report --html over run.json", ["report", run, "--html", run / "run.json"], ERROR, protect=where)
        self.check("report --html new file", ["report", run, "--html", where / "r.html", "--quiet"], OK)
        self.check("report --html over its own report", ["report", run, "--html", where / "r.html", "--quiet"], OK)

    # --- run identity -----------------------------------------------------------------------------------------------
    def identity(self) -> None:
        run = self.copy_run(self.folder("deleted-run-json"))
        (run / "run.json").unlink()
        other = [a if a != "random:tiny" else "random:tiny:1" for a in EVAL]

        def not_relabelled(_: Ran) -> Outcome:
            relabelled = len(samples_of(run)) if (run / "run.json").exists() else 0
            return Outcome(relabelled=relabelled)

        self.check("run.json deleted, rerun with another model", [*other, "--out", run], ERROR, after=not_relabelled)
        self.check("run.json deleted, rerun of the same run", [*EVAL, "--out", run], OK,
                   after=lambda _: kept_samples(self.base, run))  # fmt: skip
        stranger = self.folder("replaced-run-json")
        made = run_here([*other, "--out", stranger / "other"])
        run = self.copy_run(stranger)
        shutil.copy(stranger / "other" / "run.json", run / "run.json")
        if made.code == 0:
            self.check("run.json replaced by another run's (report)", ["report", run], ERROR)
            self.check("run.json replaced by another run's (resume)", [*other, "--out", run], ERROR, protect=run)

    # --- run files of the wrong shape ----------------------------------------------------------------------------
    def run_files(self) -> None:
        lines = {
            "samples.jsonl line {}": "{}",
            'samples.jsonl line "length": "1k"': '{"task": "vt", "length": "1k", "index": 0}',
            "samples.jsonl wrong-typed score first": None,
        }
        for name, line in lines.items():
            run = self.copy_run(self.folder("samples-line"))
            real = (run / "samples.jsonl").read_text()
            if line is None:
                first = json.loads(real.splitlines()[0])
                line = json.dumps({**first, "score": "high"})
            (run / "samples.jsonl").write_text(line + "\n" + real)
            keep = lambda _, run=run: kept_samples(self.base, run)  # noqa: E731
            self.check(f"{name} (report)", ["report", run, "--quiet"], OK, after=keep)
            self.check(f"{name} (resume)", [*EVAL, "--out", run], OK, after=keep)
        run = self.copy_run(self.folder("samples-folder"))
        (run / "samples.jsonl").unlink()
        (run / "samples.jsonl").mkdir()
        self.check("samples.jsonl is a folder", ["report", run], ERROR)
        for name, text in (("a list", "[1]"), ("params a string", '{"kind": "eval", "params": "x"}')):
            run = self.copy_run(self.folder("run-json"))
            (run / "run.json").write_text(text)
            self.check(f"run.json is {name} (report)", ["report", run], ERROR)
            self.check(f"run.json is {name} (resume)", [*EVAL, "--out", run], ERROR, protect=run)
        plain = self.folder("plain-file") / "plain"
        plain.write_text("x\n")
        self.check("report on a plain file", ["report", plain], ERROR)

    # --- model files ------------------------------------------------------------------------------------------------
    def model_files(self) -> None:
        from mmx.model import MiniMaxConfig, MiniMaxForCausalLM

        tiny = MiniMaxConfig.from_name("tiny").to_dict()
        for name, damage in CONFIG_DAMAGE.items():
            ckpt = self.folder("config") / "ckpt"
            ckpt.mkdir()
            content = {**tiny, **damage} if isinstance(damage, dict) and damage else damage
            (ckpt / "config.json").write_text(json.dumps(content))
            (ckpt / "model.safetensors").write_bytes(b"")
            train = ["train", "--out", ckpt.parent / "t", "--init", ckpt, "--stages", "1k:1", "--batch-tokens", "2k"]
            self.check(f"config.json {name} (eval)", [*EVAL[:2], "--model", f"mmx:{ckpt}", *EVAL[4:],
                                                       "--out", ckpt.parent / "e"], ERROR)  # fmt: skip
            self.check(f"config.json {name} (models)", ["models", "--checkpoint", ckpt], ERROR)
            self.check(f"config.json {name} (train --init)", train, ERROR)
            self.check(f"config.json {name} (serve)", ["serve", "--model", f"mmx:{ckpt}", "--port", "0"], ERROR)
        ckpt = self.folder("tokenizer") / "ckpt"  # a vocabulary other than bytes, so tokenizer.json is read
        MiniMaxForCausalLM(dataclasses.replace(MiniMaxConfig.from_name("tiny"), vocab_size=300)).save_pretrained(ckpt)
        (ckpt / "tokenizer.json").write_text("garbage")
        self.check("garbage tokenizer.json (tasks show)", ["tasks", "show", "vt", "--tokenizer", ckpt], ERROR)
        self.check("garbage tokenizer.json (eval)", [*EVAL[:2], "--model", f"mmx:{ckpt}", *EVAL[4:],
                                                     "--out", ckpt.parent / "e"], ERROR)  # fmt: skip

        tasks = self.folder("lm-eval-task")
        (tasks / "lost.yaml").write_text(
            "task: rel_lost\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: "
            f"{tasks / 'missing.jsonl'}\ntest_split: test\noutput_type: generate_until\ndoc_to_text: q\n"
            "doc_to_target: a\nmetric_list:\n  - metric: exact_match\n"
        )
        lm_eval = ["eval", "lm-eval", "--model", "random:tiny", "--tasks", "rel_lost", "--include-path", tasks]
        self.check("an lm-eval task whose data is missing", [*lm_eval, "--out", tasks / "run"], ERROR)

    # --- options ----------------------------------------------------------------------------------------------------
    def options(self) -> None:
        where = self.folder("options")
        train = ["train", "--out", where / "t", "--model", "tiny", "--stages", "1k:2", "--batch-tokens", "2k"]
        for name, args in {
            "train --checkpoint-every 0": [*train, "--checkpoint-every", "0"],
            "train --data drill=inf": [*train, "--data", "drill=inf"],
            "tasks show niah -o depths=abc": ["tasks", "show", "niah", "-o", "depths=abc"],
            "tasks show -l 5g": ["tasks", "show", "vt", "-l", "5g"],
            "serve --port 70000": ["serve", "--model", "random:tiny", "--port", "70000"],
            "a sweep with nothing to run": [*EVAL[:-5], "--lengths", "2m", "--out", where / "n"],
            "an unknown model": [*EVAL[:2], "--model", "nope", "--out", where / "u"],
            "bench --layers 100 on a 4-layer model": [
                "bench",
                "throughput",
                "--model",
                "random:tiny",
                "--layers",
                "100",
                "--out",
                where / "b",
            ],  # fmt: skip
        }.items():
            self.check(name, args, ERROR)

    def full_disk(self) -> None:
        """A run whose samples.jsonl may not grow past a few records (RLIMIT_FSIZE, which Python turns into an
        EFBIG error as a full disk turns into ENOSPC): one line and exit 2, then a rerun resumes to the end."""
        out = self.folder("full-disk") / "run"
        args = [*EVAL[:-2], "12", "--batch-size", "1", "--quiet", "--out", out]
        limit = (self.base / "run.json").stat().st_size + 64  # run.json fits; samples.jsonl outgrows it mid-run

        def small_files() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        done = subprocess.run(mmx_argv(*args), capture_output=True, text=True, env=env(self.dir),
                              preexec_fn=small_files, timeout=600)  # fmt: skip
        ran = Ran(done.returncode, done.stdout, done.stderr, TRACEBACK in done.stderr)
        self.tally.add("a full disk mid-eval", "named", ran, ERROR, Outcome())
        written = len(samples_of(out)) if (out / "run.json").exists() else 0
        again = run_here(args)
        whole = (out / "run.json").exists() and len(samples_of(out)) == 12
        self.tally.add("resume after a full disk", "named", again, OK, Outcome(lost=0 if whole else 12 - written))


def _mutate(rng: random.Random, value: dict[str, Any]) -> Any:
    """`value` with one to three fields replaced by random JSON (or dropped), or a random JSON value instead."""
    if rng.random() < 0.15:
        return _random_json(rng)
    out = dict(value)
    for key in rng.sample(sorted(out), k=min(len(out), rng.randint(1, 3))):
        if rng.random() < 0.2:
            del out[key]
        else:
            out[key] = _random_json(rng)
    return out


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 2 else 6)
    scalars = [None, rng.random() < 0.5, rng.randint(-(2**40), 2**40), rng.uniform(-1e6, 1e6),
               rng.choice(["", "64", "1k", "abc", "∞", "nan"]), rng.choice([0, -1, 1, 2**63])]  # fmt: skip
    if kind < 6:
        return scalars[kind]
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "task", "params", "x"]): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _bad_line(rng: random.Random, record: dict[str, Any]) -> str:
    """A line that cannot be a sample: torn, or `record` mutated until it no longer fits the schema (a mutation
    that still fits would be a forged sample, which no check can tell from the real one)."""
    if rng.random() < 0.3:
        return json.dumps(record)[: rng.randint(1, 30)]
    for _ in range(100):
        mutated = _mutate(rng, record)
        if not isinstance(mutated, dict) or line_problem(SampleRecord, mutated) is not None:
            return json.dumps(mutated)
    return json.dumps(record)[:-1]


def generated(cases: Cases, rng: random.Random, count: int) -> None:
    """`count` random damages, round robin: config.json, run.json, samples.jsonl."""
    from mmx.model import MiniMaxConfig

    tiny = MiniMaxConfig.from_name("tiny").to_dict()
    meta = json.loads((cases.base / "run.json").read_text())
    real_lines = (cases.base / "samples.jsonl").read_text().splitlines()
    for i in range(count):
        where = cases.folder("generated")
        if i % 3 == 0:
            (where / "config.json").write_text(json.dumps(_mutate(rng, tiny)))
            ran = run_here(["models", "--checkpoint", where, "--json"])
            cases.tally.add(f"generated config.json #{i}", "generated", ran, "either", Outcome())
        elif i % 3 == 1:
            run = cases.copy_run(where)
            damaged = _mutate(rng, meta if rng.random() < 0.5 else meta["params"])
            if isinstance(damaged, dict) and "kind" not in damaged and rng.random() < 0.5:
                damaged = {**meta, "params": damaged}
            (run / "run.json").write_text(json.dumps(damaged))
            ran = run_here(["report", run, "--quiet"])
            relabelled = int(ran.code == 0 and isinstance(damaged, dict) and damaged.get("run_id") != meta["run_id"])
            cases.tally.add(f"generated run.json #{i}", "generated", ran, "either", Outcome(relabelled=relabelled))
        else:
            run = cases.copy_run(where)
            lines = list(real_lines)
            for _ in range(rng.randint(1, 3)):
                lines.insert(rng.randint(0, len(lines)), _bad_line(rng, json.loads(rng.choice(real_lines))))
            (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
            for args in (["report", run, "--quiet"], [*EVAL, "--out", run]):
                ran = run_here(args)
                outcome = kept_samples(cases.base, run) if ran.code == 0 else Outcome()
                cases.tally.add(f"generated samples.jsonl #{i}", "generated", ran, "either", outcome)


def bad_file_phase(workdir: Path, generated_count: int, seed: int) -> Tally:
    """Every named case, then `generated_count` generated ones."""
    tally = Tally()
    base = workdir / "base-run"
    made = run_here([*EVAL, "--out", base])
    if made.code != 0:
        tally.notes.append(f"the base run failed: {made.err.strip()}")
        return tally
    cases = Cases(workdir, base, tally)
    for group in (cases.outputs, cases.identity, cases.run_files, cases.model_files, cases.options, cases.full_disk):
        group()
    generated(cases, random.Random(seed), generated_count)
    return tally
