"""RULER data folders written by the format rules of NVIDIA/RULER's prepare.py, in both of its row formats.

Current rows: `input` is the prompt without the answer prefix, `answer_prefix` the cut-off tail (leading space),
`length` the token count of both plus the answer budget, NIAH's `index` the answer's character offset. Older rows:
`{index, input, outputs, length}`, the answer prefix still at the end of `input`. One JSON object a line, written
with `ensure_ascii=True` as RULER's manifest writer does. The texts are mmx's own, not RULER's templates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUDGET = {"niah_single_1": 128, "vt": 30, "qa_1": 32}


def ruler_rows(task: str, count: int, new_format: bool) -> list[dict]:
    rows = []
    for i in range(count):
        answer = [f"{1000000 + 7 * i}"] if task != "vt" else [f"VAR{i}A", f"VAR{i}B"]
        if task == "qa_1":
            answer = [f"Straße {i}", f"street {i}"]
        body = f"Filler text, line {i}. The value is {' and '.join(answer)}. More filler — ünïcödé.\nQuestion {i}?"
        prefix = f" Answer for row {i}:"
        row = {"index": body.find(answer[0]) if new_format else i, "outputs": answer}
        if new_format:
            row |= {"input": body, "answer_prefix": prefix}
        else:
            row |= {"input": body + prefix}
        row["length"] = len((body + prefix).encode()) + BUDGET[task]
        if new_format:
            row["length_w_model_temp"] = row["length"]
        rows.append(row)
    return rows


def write_ruler_folder(folder: Path, tasks: dict[str, int], new_format: bool = True) -> Path:
    """`folder/<task>/validation.jsonl` for each task, with `tasks[task]` rows."""
    for task, count in tasks.items():
        path = folder / task / "validation.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in ruler_rows(task, count, new_format)))
    return folder


@pytest.fixture
def ruler_folder(tmp_path: Path) -> Path:
    """One length's folder as RULER's run.sh lays it out (`<length>/data/<task>`), current row format."""
    return write_ruler_folder(tmp_path / "1024" / "data", {"vt": 2, "qa_1": 2})
