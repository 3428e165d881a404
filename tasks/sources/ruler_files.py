"""NVIDIA/RULER's own data files as tasks: `ruler:DIR` evaluates what RULER's `prepare.py` wrote, byte for byte.

A RULER data folder holds `<task>/validation.jsonl`, one JSON object a line with `input` (the prompt, any model
template included), `outputs` (the references), `length` (tokens of prompt + answer prefix + answer budget in the
tokenizer RULER used) and, in files written since mid-2025, `answer_prefix` (the start of the reply, cut off `input`;
older files keep it at the end of `input`). The model reads `input + answer_prefix`, exactly. Rows are numbered by
line: RULER's `index` is not a row number in every version (its NIAH writes the answer's character offset there).

`DIR` is one length's folder (`DIR/<task>/validation.jsonl`, RULER's `.../<length>/data`) or a folder of lengths
(`DIR/<length>/<task>/validation.jsonl` or `DIR/<length>/data/<task>/validation.jsonl`, `<length>` as 4096 or 4k).
A single folder whose name is not a length takes the smallest power of two that holds its longest row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.sizes import format_size, parse_size
from mmx.tasks.sample import Sample
from mmx.tasks.scoring import METRICS

FILE = "validation.jsonl"
# RULER's answer budget (`tokens_to_generate`) and metric per base task, from its scripts' constants.
BASE_TASKS = {
    "niah": (128, "all"),
    "variable_tracking": (30, "all"),
    "common_words_extraction": (120, "all"),
    "freq_words_extraction": (50, "all"),
    "qa": (32, "part"),
}
_BASE_OF = {"vt": "variable_tracking", "cwe": "common_words_extraction", "fwe": "freq_words_extraction"}
# Strings that RULER's model templates put into `input`: such inputs must not be wrapped in a chat template again.
TEMPLATE_MARKERS = ("<|begin_of_text|>", "<|start_header_id|>", "[INST]", "<|im_start|>", "<|user|>", "<BOS_TOKEN>",
                    "USER:", "<|START_OF_TURN_TOKEN|>", "<extra_id_1>", "[gMASK]")  # fmt: skip


def base_task(name: str) -> str:
    """RULER's base task of a task name (niah_single_1 -> niah, qa_2 -> qa, vt -> variable_tracking)."""
    if name in _BASE_OF:
        return _BASE_OF[name]
    head = name.split("_")[0]
    if head in ("niah", "qa"):
        return head
    raise MmxError(
        f"no RULER metric known for task folder {name!r}",
        "RULER's task names start with niah_ or qa_, or are vt, cwe, fwe",
    )


@dataclass(frozen=True)
class RulerRow:
    """One line of a RULER file, as read: the prompt text parts, references and RULER's recorded length."""

    line: int
    input: str
    answer_prefix: str | None
    outputs: list[str]
    length: int | None
    index: Any


def _row(path: Path, line: int, text: str) -> RulerRow:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MmxError(
            f"{path}:{line + 1} is not JSON ({err.msg})", "regenerate the file with RULER's prepare.py"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("input"), str):
        raise MmxError(f"{path}:{line + 1} has no text field 'input'", "is this a RULER validation.jsonl?")
    outputs = data.get("outputs", [data.get("output", "")] if "output" in data else None)
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise MmxError(f"{path}:{line + 1} has no list of strings 'outputs'", "is this a RULER validation.jsonl?")
    prefix = data.get("answer_prefix")
    length = data.get("length")
    return RulerRow(
        line=line,
        input=data["input"],
        answer_prefix=prefix if isinstance(prefix, str) else None,
        outputs=outputs,
        length=length if isinstance(length, int) else None,
        index=data.get("index"),
    )


@dataclass(frozen=True)
class RulerFile:
    """One task's file at one length."""

    path: Path
    length: int

    @cached_property
    def rows(self) -> list[RulerRow]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [_row(self.path, i, text) for i, text in enumerate(lines) if text.strip()]

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def templated(self) -> bool:
        """Whether RULER baked a model (chat) template into the inputs."""
        return any(marker in row.input[:400] for row in self.rows[:3] for marker in TEMPLATE_MARKERS)


class RulerFileTask:
    """A RULER task read from its files, one per length, behind the `Task` contract the sweep uses."""

    category = "RULER data"

    def __init__(self, name: str, files: dict[int, RulerFile], *, answer_prefix: bool = True) -> None:
        self.name = name
        self.files = files
        self.base = base_task(name)
        self.max_new_tokens, self.metric = BASE_TASKS[self.base]
        self.use_answer_prefix = answer_prefix

    def params(self) -> dict[str, Any]:
        """What decides this task's prompts and scores: RULER's metric and budget, and a hash of every file read (named
        within its length's folder, so the same data resumes from another place)."""
        return {
            "task": self.name,
            "ruler_task": self.base,
            "metric": f"string_match_{self.metric}",
            "max_new_tokens": self.max_new_tokens,
            "answer_prefix": self.use_answer_prefix,
            "files": {
                format_size(n): {"file": f"{f.path.parent.name}/{f.path.name}", "sha256": f.sha256, "rows": len(f.rows)}
                for n, f in sorted(self.files.items())
            },
        }

    def _sample(self, row: RulerRow, length: int) -> Sample:
        prefix = row.answer_prefix or ""
        if not self.use_answer_prefix and row.answer_prefix is None:
            raise MmxError(
                f"{self.name}: these RULER rows keep the answer prefix inside 'input'",
                "files from RULER before mid-2025 cannot run without it; drop --no-answer-prefix",
            )
        return Sample(
            task=self.name,
            length=length,
            index=row.line,
            prompt=row.input,
            answer_prefix=prefix if self.use_answer_prefix else "",
            references=list(row.outputs),
            max_new_tokens=self.max_new_tokens,
            metadata={"ruler_length": row.length, "ruler_index": row.index},
        )

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 0) -> list[Sample]:
        """The first `n` rows of the file at `length` (tokenizer and seed play no part: the prompts are fixed)."""
        if length not in self.files:
            have = ", ".join(format_size(x) for x in sorted(self.files))
            raise MmxError(f"no RULER data for {self.name} at {format_size(length)}", f"this folder has {have}")
        rows = self.files[length].rows
        if len(rows) < n:
            path = self.files[length].path
            raise MmxError(f"{path} has {len(rows)} rows, fewer than --samples {n}", f"use --samples {len(rows)}")
        return [self._sample(row, length) for row in rows[:n]]

    def score(self, sample: Sample, prediction: str) -> float:
        """RULER's metric for this task (string_match_part for QA, string_match_all otherwise)."""
        return METRICS[self.metric](prediction, sample.references)


def _length_of(name: str) -> int | None:
    try:
        return parse_size(name)
    except (MmxError, ValueError):
        return None


def _task_folders(folder: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(folder.glob(f"*/{FILE}"))}


def _inferred_length(files: dict[str, Path]) -> int:
    """The smallest power of two (at least 1k) that holds every row's recorded length."""
    longest = 0
    for path in files.values():
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if text.strip():
                longest = max(longest, _row(path, line, text).length or 0)
    size = 1024
    while size < longest:
        size *= 2
    return size


def find_files(folder: Path) -> dict[int, dict[str, Path]]:
    """{length: {task: file}} for a RULER data folder in any of the layouts above."""
    if not folder.is_dir():
        raise MmxError(f"RULER data folder {str(folder)!r} does not exist", "pass the folder prepare.py wrote")
    flat = _task_folders(folder)
    if flat:
        own = _length_of(folder.name)
        if own is None and folder.name == "data":
            own = _length_of(folder.parent.name)
        return {own or _inferred_length(flat): flat}
    found: dict[int, dict[str, Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        length = _length_of(sub.name)
        if length is None:
            continue
        tasks = _task_folders(sub) or _task_folders(sub / "data")
        if tasks:
            found[length] = tasks
    if not found:
        raise MmxError(
            f"no RULER data under {str(folder)!r}",
            f"expected DIR/<task>/{FILE} or DIR/<length>/<task>/{FILE}, as RULER's prepare.py writes",
        )
    return found


def ruler_tasks(folder: Path, names: list[str] | None, *, answer_prefix: bool = True) -> dict[str, RulerFileTask]:
    """Tasks from a RULER data folder: `names` (None: every task found), each with its file per length."""
    found = find_files(folder)
    present = list(dict.fromkeys(task for tasks in found.values() for task in tasks))
    wanted = present if names is None else names
    missing = [n for n in wanted if n not in present]
    if missing:
        raise MmxError(f"no RULER data for {', '.join(missing)} in {folder}", f"tasks found: {', '.join(present)}")
    out = {}
    for name in wanted:
        files = {n: RulerFile(tasks[name], n) for n, tasks in found.items() if name in tasks}
        out[name] = RulerFileTask(name, files, answer_prefix=answer_prefix)
    return out
