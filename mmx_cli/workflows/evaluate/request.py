"""One `mmx eval ruler|niah` (or `mmx.evaluate`) request, checked and pinned: what to run, where, and the argv that
resumes it. The CLI and the Python API build requests here, so both write the same `run.json`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmx.errors import MmxError
from mmx.results.rundir import default_out
from mmx.sizes import format_size, resolve_lengths

if TYPE_CHECKING:
    from mmx.tasks.sources import Source

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
    "tp": "--tp",
    "quantize_experts": "--quantize-experts",
}


@dataclass(frozen=True)
class EvalRequest:
    """What to run (tasks by name, lengths, samples, seed), on which model, into which directory, and the argv that
    resumes it."""

    suite: str
    tasks: dict[str, Any]
    source: dict[str, Any]  # provenance of the prompts (`mmx.tasks.sources.Source.describe()`)
    task_options: dict[str, dict[str, Any]]
    model: str
    options: dict[str, Any]
    lengths: list[int]
    samples: int
    seed: int
    batch_size: int | None
    answer_prefix: bool
    out: Path
    command: list[str]
    judge: str | None = None  # openai:URL of a model that also scores each answer 1-10 (niah)
    judge_model: str | None = None
    prefix_reuse: bool = True  # speed only (predictions equal up to rounding): neither pinned nor in `command`


def parse_batch_size(text: str | int | None) -> int | None:
    """`auto` (or None) -> None, the backend decides per length; otherwise a positive integer."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    if not str(text).strip().isdigit() or int(text) < 1:
        raise MmxError(f"bad batch size {text!r}", "use auto or a positive integer")
    return int(text)


def resolve_tasks(
    names: str | Sequence[str],
    answer_prefix: bool,
    source: str | None = None,
    options: Sequence[str] = (),
) -> Source:
    """`all` (RULER's 13, or every task in a RULER data folder) or task names (a comma list or a sequence), from
    prompt source `source` (mmx, ruler:DIR, lm-eval), with task options `KEY=VALUE` / `TASK.KEY=VALUE`.

    Without an answer prefix the tasks fill its tokens with context, so prompts still land on the target length.
    A substitute (qa_1 -> synth_qa_1 without QA data) runs and records under its own name.
    """
    from mmx.tasks.options import parse_pairs
    from mmx.tasks.registry import list_tasks
    from mmx.tasks.sources import resolve_source

    listed = names.split(",") if isinstance(names, str) else list(names)
    wanted = list(dict.fromkeys(str(n).strip() for n in listed if str(n).strip()))
    if not wanted:
        raise MmxError("no tasks given", "use --tasks all or a comma list, e.g. --tasks niah_single_1,vt")
    chosen = None if [n.lower() for n in wanted] == ["all"] else wanted
    pairs = parse_pairs(options, [*(chosen or []), *list_tasks()])
    return resolve_source(source, chosen, pairs, answer_prefix=answer_prefix)


def _lengths(source: Source, max_len: str | None, lengths: str | None) -> list[int]:
    """The lengths to run: asked for, or (data sources) those the data has, the asked ones checked against it."""
    if source.lengths is None:
        return resolve_lengths(max_len, lengths, DEFAULT_MAX_LEN)
    if max_len is None and lengths is None:
        return list(source.lengths)
    asked = resolve_lengths(max_len, lengths, DEFAULT_MAX_LEN)
    if max_len is not None and lengths is None:
        asked = [n for n in source.lengths if n <= asked[-1]]
    missing = [format_size(n) for n in asked if n not in source.lengths]
    if missing or not asked:
        have = ", ".join(format_size(n) for n in source.lengths)
        raise MmxError(f"the RULER data has no {', '.join(missing) or 'such'} length", f"it has {have}")
    return asked


def _samples(source: Source, samples: int | None, default: int) -> int:
    if samples is None:
        return source.rows if source.rows is not None else default
    if samples < 1:
        raise MmxError(f"bad sample count {samples}", "use --samples 1 or more")
    if source.rows is not None and samples > source.rows:
        raise MmxError(
            f"--samples {samples} is more than the RULER data holds", f"use --samples {source.rows} or fewer"
        )
    return samples


def _check_template(source: Source, backend: dict[str, Any]) -> None:
    """RULER's inputs may carry a model template already; wrapping them in another would double it."""
    if source.kind == "ruler" and backend.get("chat_template"):
        templated = [name for name, task in source.tasks.items() if any(f.templated for f in task.files.values())]
        if templated:
            raise MmxError(
                f"the RULER inputs of {templated[0]} already carry a model template",
                "drop --chat-template, or remake the data with --model_template_type base",
            )


def build_request(
    suite: str,
    source: Source,
    suite_flags: Sequence[tuple[str, Any]],
    *,
    model: str = DEFAULT_MODEL,
    max_len: str | None = None,
    lengths: str | None = None,
    samples: int | None = None,
    default_samples: int = 100,
    option: Sequence[str] = (),
    out: Path | str | None = None,
    seed: int = 0,
    batch_size: str | int | None = "auto",
    no_answer_prefix: bool = False,
    judge: str | None = None,
    judge_model: str | None = None,
    no_prefix_reuse: bool = False,
    **backend: Any,
) -> EvalRequest:
    """Check the options every eval shares and pin down everything a rerun must repeat (lengths, --out).

    `no_prefix_reuse` prefills every prompt alone: a speed switch, so it is not part of the pinned command."""
    from mmx.model.backends.common import backend_options  # torch: only once a command runs

    unknown = sorted(set(backend) - set(BACKEND_FLAGS))
    if unknown:
        raise MmxError(f"unknown option {unknown[0]!r}", f"backend options are {', '.join(BACKEND_FLAGS)}")
    resolved = _lengths(source, max_len, lengths)
    batch = parse_batch_size(batch_size)
    samples = _samples(source, samples, default_samples)
    given = {name: backend.get(name) for name in BACKEND_FLAGS}
    _check_template(source, given)
    options = backend_options(**{k: v for k, v in given.items() if v is not None})
    where = Path(out) if out is not None and str(out) != "" else default_out(suite, model)
    pinned = [
        ("--model", model),
        ("--source", source.spec),
        *suite_flags,
        *(("-o", pair) for pair in option),
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
        tasks=dict(source.tasks),
        source=source.describe(),
        task_options=dict(source.options),
        model=model,
        options=options,
        lengths=resolved,
        samples=samples,
        seed=seed,
        batch_size=batch,
        answer_prefix=not no_answer_prefix,
        out=where,
        command=argv,
        judge=_judge_spec(judge),
        judge_model=judge_model,
        prefix_reuse=not no_prefix_reuse,
    )


def _judge_spec(judge: str | None) -> str | None:
    if judge is None:
        return None
    if not judge.startswith("openai:") or len(judge) <= len("openai:"):
        raise MmxError(f"bad judge {judge!r}", "use --judge openai:URL (an OpenAI-compatible server)")
    return judge
