"""Where a RULER run's prompts come from: `mmx` (mmx's own generators), `ruler:DIR` (the files NVIDIA/RULER's
`prepare.py` wrote) or `lm-eval` (lm-evaluation-harness's RULER port, generated at run time).

Every source yields the same thing, a mapping of task name -> task with `samples(tokenizer, length, n, seed)` and
`score(sample, prediction)`, so the sweep, the store and the reports stay the same. `Source.describe()` is the run's
provenance: which prompts, which haystack and QA data (real or a substitute), and whether its mean can stand beside
published RULER numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.tasks.options import Option, assign

SOURCE_KINDS = ("mmx", "ruler", "lm-eval")
RULER_TASK_COUNT = 13
_COMMON_OPTIONS = {"answer_prefix"}  # set by --no-answer-prefix, not by -o


@dataclass
class Source:
    """The tasks of one run and where their prompts come from; `lengths` is set when the data fixes them."""

    spec: str
    kind: str
    tasks: dict[str, Any]
    lengths: list[int] | None = None
    rows: int | None = None  # the fewest rows any data file has: the most samples per cell it can give
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The run's provenance, recorded in run.json and shown beside its scores."""
        return provenance(self)


def parse_source(spec: str | None) -> tuple[str, Path | None]:
    """`mmx` (default), `lm-eval`, or `ruler:DIR` -> (kind, folder)."""
    text = (spec or "mmx").strip()
    kind, sep, rest = text.partition(":")
    if kind == "ruler":
        if not sep or not rest.strip():
            raise MmxError("--source ruler needs the data folder", "write --source ruler:DIR (what prepare.py wrote)")
        return "ruler", Path(rest).expanduser().resolve()
    if sep or kind not in SOURCE_KINDS:
        raise MmxError(f"unknown prompt source {text!r}", "use mmx, ruler:DIR or lm-eval")
    return kind, None


def resolve_source(
    spec: str | None, names: Sequence[str] | None, options: Sequence[Option], *, answer_prefix: bool = True
) -> Source:
    """The tasks `names` (None: RULER's 13, or every task in a RULER folder) from source `spec`, with options."""
    from mmx.tasks.registry import RULER_TASKS

    kind, folder = parse_source(spec)
    if kind == "ruler":
        assert folder is not None
        from mmx.tasks.sources.ruler_files import ruler_tasks

        if options:
            raise MmxError("RULER's files take no task options", "their prompts are fixed; drop -o")
        tasks = ruler_tasks(folder, list(names) if names is not None else None, answer_prefix=answer_prefix)
        lengths = sorted({n for task in tasks.values() for n in task.files})
        rows = min(len(f.rows) for task in tasks.values() for f in task.files.values())
        given = (spec or "").strip()  # as the user wrote it: a machine's absolute path stays out of the run
        return Source(given, kind, dict(tasks), lengths, rows)
    wanted = list(names) if names is not None else list(RULER_TASKS)
    if kind == "lm-eval":
        from mmx.tasks.sources.lm_eval_ruler import PORT, accepted_options, lm_eval_tasks

        unknown = [n for n in wanted if n not in PORT]
        if unknown:
            raise MmxError(f"lm-eval's RULER port has no task {unknown[0]!r}", f"choose from {', '.join(PORT)}")
        chosen = assign(options, wanted, accepted_options)
        return Source("lm-eval", kind, dict(lm_eval_tasks(wanted, chosen, answer_prefix=answer_prefix)), options=chosen)
    from mmx.tasks.registry import get_task, task_options

    chosen = assign(options, wanted, lambda name: set(task_options(name)) - _COMMON_OPTIONS)
    built = [get_task(name, answer_prefix=answer_prefix, **chosen.get(name, {})) for name in wanted]
    return Source("mmx", kind, {task.name: task for task in built}, options=chosen)


def _essay_origin(kind: str, params: dict[str, Any]) -> str | None:
    haystack = params.get("haystack_params") if kind == "mmx" else params.get("haystack")
    if not isinstance(haystack, dict) or "corpus" not in haystack:
        return None
    return str(haystack["corpus"])


def provenance(source: Source) -> dict[str, Any]:
    """Which prompts, which essays and QA data, what was substituted, and whether published RULER rows compare."""
    params = {name: task.params() for name, task in source.tasks.items()}
    substitutes: list[str] = []
    essays = sorted({e for name, p in params.items() if (e := _essay_origin(source.kind, p))})
    if source.kind == "mmx" and "builtin" in essays:
        substitutes.append("essay haystack: mmx's generated prose instead of Paul Graham's essays")
    qa = {}
    for name, p in params.items():
        if p.get("substitute_for"):
            substitutes.append(f"{p['substitute_for']}: synthetic documents ({name}) instead of the real QA data")
            qa[p["substitute_for"]] = "substitute"
        elif name in ("qa_1", "qa_2"):
            data = p.get("data")
            qa[name] = data.get("source") if isinstance(data, dict) else (data or "RULER's file")
    out: dict[str, Any] = {
        "source": source.spec,
        "prompts": {
            "mmx": "mmx's own generators",
            "ruler": "NVIDIA/RULER's files (prepare.py)",
            "lm-eval": "lm-evaluation-harness's RULER port",
        }[source.kind],
        "essays": essays or None,
        "qa_data": qa or None,
        "substitutes": substitutes,
    }
    out["comparable"], out["not_comparable_because"] = comparable(source, substitutes)
    return out


def comparable(source: Source, substitutes: list[str]) -> tuple[bool, str | None]:
    """Whether the run's RULER mean can stand beside published RULER numbers, and if not, why (one short phrase)."""
    if source.kind == "mmx":
        why = "mmx's own prompts" + (", with substitutes" if substitutes else "")
        return False, why
    if source.kind == "lm-eval":
        return False, "lm-eval's RULER port, whose prompts differ from RULER's"
    if len(source.tasks) < RULER_TASK_COUNT:
        return False, f"{len(source.tasks)} of RULER's {RULER_TASK_COUNT} tasks"
    return True, None
