"""How long building one task sample takes, per task and length, with the byte tokenizer and a locally trained BPE.

    python -m benchmarks.taskgen                   # byte: 128k, 1M, 4M; BPE (32k vocab): 128k, 1M
    python -m benchmarks.taskgen --tasks niah_single_1,cwe --byte-lengths 4m --bpe-lengths "" --samples 2

Each cell builds samples 0..n-1 in one process pinned to one CPU core and reports the mean wall time of samples 1..n-1
("warm": what an evaluation loop pays per sample) and the time of sample 0 ("first": it also pays one-time work such
as counting the essay corpus in that tokenizer). `--cold` adds RULER's way of measuring: a fresh process that imports
mmx, loads the tokenizer from disk and builds one sample, timed from start to exit. The BPE is a byte-level BPE
trained here with the `tokenizers` library on mmx's built-in prose plus the odd strings tasks print (numbers, uuids,
capitals, coded words), so nothing is downloaded. Prints a Markdown table and the machine it ran on; `--json` saves
every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mmx.sizes import format_size, parse_sizes
from mmx.tasks import SUITES, get_task


class JsonBpe:
    """A tokenizer.json behind mmx's encode/decode protocol."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


class Bytes:
    """The embedded model's tokenizer, restated so the benchmark does not import torch through mmx.model."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def train_bpe(vocab_size: int, path: Path) -> None:
    """A byte-level BPE like a typical LLM's, trained on text mmx generates itself; saved to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mmx.tasks.corpus import builtin_corpus

    rng = random.Random(0)
    odd = [
        f"{rng.randint(10**6, 10**7)} {uuid.UUID(int=rng.getrandbits(128))} VAR "
        f"{''.join(rng.choices(string.ascii_uppercase, k=5))} {''.join(rng.choices(string.ascii_lowercase, k=6))}"
        for _ in range(20_000)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([*builtin_corpus().sentences, *odd], trainer)
    tok.save(str(path))


def warm(task_name: str, tokenizer: Any, length: int, samples: int) -> dict[str, float]:
    """First-sample and mean later-sample wall seconds (and CPU seconds) in this process."""
    task = get_task(task_name)
    start = time.perf_counter()
    task.sample(tokenizer, length, 0)
    first = time.perf_counter() - start
    walls, cpus = [], []
    for index in range(1, samples):
        wall, cpu = time.perf_counter(), time.process_time()
        task.sample(tokenizer, length, index)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "first_s": first,
        "warm_s": sum(walls) / len(walls) if walls else first,
        "warm_cpu_s": sum(cpus) / len(cpus) if cpus else float("nan"),
    }


def cold(task_name: str, tokenizer_path: Path | None, length: int) -> tuple[float, float]:
    """Wall and CPU seconds for a fresh Python process to import mmx.tasks, load the tokenizer, build one sample."""
    load = f"JsonBpe(Path({str(tokenizer_path)!r}))" if tokenizer_path else "Bytes()"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\nfrom bench_taskgen import Bytes, JsonBpe, get_task\n"
        f"get_task({task_name!r}).sample({load}, {length}, 0)\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def machine() -> dict[str, Any]:
    import tokenizers

    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")]
    cpu = names[0] if info.exists() and names else platform.processor()

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "pinned_to_one_core": hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) == 1,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def table(rows: list[dict[str, Any]], columns: list[tuple[str, int]], *keys: str) -> str:
    """Markdown: one row per task, one column per (tokenizer, length); each cell `keys[0]` (`keys[1]`) seconds."""
    head = "| task | " + " | ".join(f"{tok} {format_size(n)}" for tok, n in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        cells = {(r["tokenizer"], r["length"]): r for r in rows if r["task"] == task}
        shown = [" ".join(f"{cells[c][k]:.2f}" if i == 0 else f"({cells[c][k]:.2f})" for i, k in enumerate(keys))
                 for c in columns]  # fmt: skip
        lines.append(f"| {task} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all", help="all (the 13 RULER tasks and niah) or a comma list")
    parser.add_argument("--byte-lengths", default="128k,1m,4m")
    parser.add_argument("--bpe-lengths", default="128k,1m")
    parser.add_argument("--samples", type=int, default=3, help="samples per cell (the first is reported apart)")
    parser.add_argument("--bpe-vocab", type=int, default=32_000)
    parser.add_argument("--cold", default="niah_single_1,niah_multikey_3", help="tasks to time in fresh processes")
    parser.add_argument("--all-cores", action="store_true", help="do not pin the benchmark to one CPU core")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()

    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit the pin
    names = [*SUITES["ruler"], "niah"] if args.tasks == "all" else args.tasks.split(",")
    byte_lengths, bpe_lengths = parse_sizes(args.byte_lengths), parse_sizes(args.bpe_lengths)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bpe_path = Path(tmp) / "tokenizer.json"
        start = time.perf_counter()
        train_bpe(args.bpe_vocab, bpe_path)
        print(f"trained a {args.bpe_vocab}-token BPE in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        tokenizers = {"byte": (Bytes(), byte_lengths, None), "bpe": (JsonBpe(bpe_path), bpe_lengths, bpe_path)}
        for tok_name, (tokenizer, lengths, path) in tokenizers.items():
            for length in lengths:
                for name in names:
                    row = {"task": name, "tokenizer": tok_name, "length": length}
                    row |= warm(name, tokenizer, length, args.samples)
                    if name in args.cold.split(","):
                        row["cold_s"], row["cold_cpu_s"] = cold(name, path, length)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    columns = [("byte", n) for n in byte_lengths] + [("bpe", n) for n in bpe_lengths]
    info = machine()
    print(f"machine: {json.dumps(info)}\n")
    print("Seconds per sample, warm: wall (CPU), mean of samples 1..n-1 in one process:\n")
    print(table(rows, columns, "warm_s", "warm_cpu_s"))
    print("\nSeconds for sample 0 (includes one-time work per process and tokenizer):\n")
    print(table(rows, columns, "first_s"))
    colds = [r for r in rows if "cold_s" in r]
    if colds:
        print("\nFresh process, import + tokenizer load + one sample (RULER's measurement):\n")
        for r in colds:
            where = f"{r['task']} {r['tokenizer']} {format_size(r['length'])}"
            print(f"- {where}: {r['cold_s']:.2f} s wall, {r['cold_cpu_s']:.2f} s CPU")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
