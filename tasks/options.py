"""Task options from the command line (`-o KEY=VALUE`, `-o TASK.KEY=VALUE`), checked against what each task uses.

A plain `KEY=VALUE` goes to every selected task that uses KEY; `TASK.KEY=VALUE` to that task only. An option no
selected task uses is an error rather than silently ignored, and so is a task-scoped option for a task that is not
selected or does not use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mmx.errors import MmxError

Option = tuple[str | None, str, Any]  # (task or None for every task, key, value)


def parse_value(text: str) -> Any:
    """A value as typed: JSON where it parses (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(pairs: Iterable[str], task_names: Iterable[str] = ()) -> list[Option]:
    """`["depths=5", "qa_1.data=dev.json"]` -> `[(None, "depths", 5), ("qa_1", "data", "dev.json")]`.

    A dot splits off a task only where the part before it names a known task, so values and keys stay free."""
    known = set(task_names)
    parsed: list[Option] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MmxError(
                f"bad task option {pair!r}", "write options as KEY=VALUE or TASK.KEY=VALUE, e.g. -o depths=5"
            )
        task, dot, rest = key.partition(".")
        scoped = bool(dot) and (task in known or not known)
        parsed.append(
            (task if scoped else None, (rest if scoped else key).replace("-", "_"), parse_value(value.strip()))
        )
    return parsed


def assign(
    options: Sequence[Option], selected: Sequence[str], uses: Callable[[str], Iterable[str]]
) -> dict[str, dict[str, Any]]:
    """{task: {key: value}} for the selected tasks; `uses(task)` names the options a task takes."""
    out: dict[str, dict[str, Any]] = {name: {} for name in selected}
    for task, key, value in options:
        if task is not None:
            if task not in out:
                raise MmxError(
                    f"option {task}.{key}: task {task} is not selected", "add it to --tasks, or drop the option"
                )
            accepted = set(uses(task))
            if key not in accepted:
                raise MmxError(f"task {task} has no option {key!r}", f"options it takes: {_listed(accepted)}")
            out[task][key] = value
            continue
        takers = [name for name in selected if key in set(uses(name))]
        if not takers:
            every = sorted({k for name in selected for k in uses(name)})
            raise MmxError(f"no selected task takes option {key!r}", f"options these tasks take: {_listed(every)}")
        for name in takers:
            out[name][key] = value  # the last plain value of a key wins
    for task, key, value in options:  # task-scoped values win over plain ones, whatever the order
        if task is not None:
            out[task][key] = value
    return {name: opts for name, opts in out.items() if opts}


def _listed(keys: Iterable[str]) -> str:
    return ", ".join(sorted(keys)) or "none"
