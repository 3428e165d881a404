"""One `mmx eval ruler|niah` (or `mmx.evaluate`) request, checked and pinned: what to run, where, and the argv that
resumes it. The CLI and the Python API build requests here, so both write the same `run.json`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.results.rundir import default_out
from mmx.sizes import format_size, resolve_lengths

DEFAULT_MODEL = "mmx-mini"
DEFAULT_MAX_LEN = "128k"  # RULER's default sweep: 4k … 128k
# Backend options by parameter name, with the flag that sets them (--batch-size is the runner's own here).
BACKEND_FLAGS = {
    "device": "--device",
    "dtype": "--dtype",
    "max_context": "--max-context",
    "chat_template": "--chat-template",
    "system_prompt": "--system-prompt",
    "model_args": "--model-args",
    "tokenizer": "--tokenizer",
    "api": "--api",
    "api_model": "--api-model",
    "concurrency": "--concurrency",
    "timeout": "--timeout",
    "retries": "--retries",
}


@dataclass(frozen=True)
class EvalRequest:
    """What to run (tasks by name, lengths, samples, seed), on which model, into which directory, and the argv that
    resumes it."""

    suite: str
    tasks: dict[str, Any]
    model: str
    options: dict[str, Any]
    lengths: list[int]
    samples: int
    seed: int
    batch_size: int | None
    answer_prefix: bool
    out: Path
    command: list[str]


def parse_batch_size(text: str | int | None) -> int | None:
    """`auto` (or None) -> None, the backend decides per length; otherwise a positive integer."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    if not str(text).strip().isdigit() or int(text) < 1:
        raise MmxError(f"bad batch size {text!r}", "use auto or a positive integer")
    return int(text)


def resolve_tasks(names: str | Sequence[str], answer_prefix: bool) -> dict[str, Any]:
    """`all` (RULER's 13) or task names (a comma list or a sequence) -> {name: Task}; an unknown name is one error.

    Without an answer prefix the tasks fill its tokens with context, so prompts still land on the target length.
    """
    from mmx.tasks import SUITES, get_task

    listed = names.split(",") if isinstance(names, str) else list(names)
    wanted = [str(n).strip() for n in listed if str(n).strip()]
    if [n.lower() for n in wanted] == ["all"]:
        wanted = list(SUITES["ruler"])
    if not wanted:
        raise MmxError("no tasks given", "use --tasks all or a comma list, e.g. --tasks niah_single_1,vt")
    tasks = [get_task(name, answer_prefix=answer_prefix) for name in dict.fromkeys(wanted)]  # refuses unknown names
    return {task.name: task for task in tasks}  # a substitute (qa_1 -> synth_qa_1) runs and records under its own name


def build_request(
    suite: str,
    tasks: Mapping[str, Any],
    suite_flags: Sequence[tuple[str, Any]],
    *,
    model: str = DEFAULT_MODEL,
    max_len: str | None = None,
    lengths: str | None = None,
    samples: int,
    out: Path | str | None = None,
    seed: int = 0,
    batch_size: str | int | None = "auto",
    no_answer_prefix: bool = False,
    **backend: Any,
) -> EvalRequest:
    """Check the options every eval shares and pin down everything a rerun must repeat (lengths, --out)."""
    from mmx.model.backends.common import backend_options  # torch: only once a command runs

    unknown = sorted(set(backend) - set(BACKEND_FLAGS))
    if unknown:
        raise MmxError(f"unknown option {unknown[0]!r}", f"backend options are {', '.join(BACKEND_FLAGS)}")
    resolved = resolve_lengths(max_len, lengths, DEFAULT_MAX_LEN)
    batch = parse_batch_size(batch_size)
    if samples < 1:
        raise MmxError(f"bad sample count {samples}", "use --samples 1 or more")
    given = {name: backend.get(name) for name in BACKEND_FLAGS}
    options = backend_options(**{k: v for k, v in given.items() if v is not None})
    where = Path(out) if out is not None and str(out) != "" else default_out(suite, model)
    pinned = [
        ("--model", model),
        *suite_flags,
        ("--lengths", ",".join(format_size(n) for n in resolved)),
        ("--samples", samples),
        ("--seed", seed),
        ("--out", where),
        ("--batch-size", "auto" if batch is None else batch),
        ("--no-answer-prefix", no_answer_prefix),
        *((BACKEND_FLAGS[name], value) for name, value in given.items() if value not in (None, "auto")),
    ]
    argv = ["mmx", "eval", suite]
    for flag, value in pinned:
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return EvalRequest(
        suite=suite,
        tasks=dict(tasks),
        model=model,
        options=options,
        lengths=resolved,
        samples=samples,
        seed=seed,
        batch_size=batch,
        answer_prefix=not no_answer_prefix,
        out=where,
        command=argv,
    )
