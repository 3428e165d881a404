"""`mmx eval lm-eval`: lm-evaluation-harness tasks on any mmx model, written as an mmx run directory.

The run holds `run.json` (kind "lm-eval"), `lm_eval_results.json` (lm-eval's per-task metrics, which `mmx report`
shows), `lm_eval_output.json` (the rest of lm-eval's output: task configs, versions, sample counts), `samples.jsonl`
(one record per scored document) and `lm_eval_requests.jsonl` (every model answer, so an interrupted run resumes
without asking the model again). Data comes from local files or the local Hugging Face cache: mmx runs lm-eval offline
unless `HF_DATASETS_OFFLINE=0` is set.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mmx import backend_flags as flags
from mmx.errors import MmxError
from mmx.groups import eval_app

RESULTS_FILE = "lm_eval_results.json"
OUTPUT_FILE = "lm_eval_output.json"
REQUESTS_FILE = "lm_eval_requests.jsonl"
# Parts of lm-eval's output worth keeping beside the results (its `samples` become samples.jsonl; its environment
# dump repeats run.json's versions and hardware).
_OUTPUT_KEYS = ("groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config")


def parse_limit(text: str | None) -> int | float | None:
    """`--limit`: a document count per task, or a fraction below 1 (as lm-eval takes it)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0 or (value >= 1 and not value.is_integer()):
        raise MmxError(f"bad --limit {text!r}", "give a document count (e.g. 100) or a fraction below 1 (e.g. 0.1)")
    return int(value) if value >= 1 else value


def include_fingerprint(directory: Path | None) -> str | None:
    """SHA-256 over the include directory's files (names and bytes): a changed task definition refuses to resume."""
    if directory is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def task_manager(names: list[str], include_path: Path | None) -> Any:
    """lm-eval's TaskManager: only the include directory when it has every task (indexing lm-eval's own ~15k task
    files takes seconds), else both. Unknown task names are one MmxError with the nearest known names."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(local.match_tasks([name]) for name in names):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    for name in names:
        if not manager.match_tasks([name]):
            near = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f"did you mean {', '.join(near)}?" if near else "list them with `lm-eval ls tasks`"
            where = f" or in {include_path}" if include_path else ""
            raise MmxError(f"lm-eval has no task {name!r}{where}", hint)
    return manager


def sample_records(task: str, logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """samples.jsonl records for lm-eval's logged documents: the first metric with a 0..1 per-document value is the
    score; tasks without one (perplexity) keep only their aggregate in lm_eval_results.json."""
    records: dict[int, dict[str, Any]] = {}
    for doc in logged:
        metrics = {m: doc.get(m) for m in doc.get("metrics", [])}
        score = next((float(v) for v in metrics.values() if _unit(v)), None)
        if score is None or doc.get("doc_id") in records:  # one record per document (the first filter's)
            continue
        arguments, responses = doc.get("arguments") or [], doc.get("filtered_resps") or []
        context = str(arguments[0][0]) if arguments and arguments[0] else ""
        choices = [a[1] for a in arguments if len(a) > 1 and isinstance(a[1], str)]
        target = doc.get("target")
        if choices and len(choices) == len(responses) and all(isinstance(r, (list, tuple)) for r in responses):
            prediction = choices[max(range(len(responses)), key=lambda i: responses[i][0])]
            references = [choices[target]] if isinstance(target, int) and 0 <= target < len(choices) else [str(target)]
        else:
            prediction = str(responses[0]) if isinstance(responses, list) and responses else str(responses)
            references = [str(t) for t in target] if isinstance(target, list) else [str(target)]
        records[doc["doc_id"]] = {
            "task": task,
            "length": None,
            "index": doc["doc_id"],
            "score": score,
            "status": "ok",
            "prediction": prediction,
            "references": references,
            "prompt_hash": hashlib.sha256(context.encode()).hexdigest()[:16],
            "prompt_tokens": None,
            "metadata": {"metrics": metrics, "filter": doc.get("filter"), "doc_hash": doc.get("doc_hash")},
            "timings": {"build_s": None, "generate_s": None},
        }
    return list(records.values())


def _unit(value: Any) -> bool:
    return isinstance(value, (int, float)) and 0 <= float(value) <= 1


class _Bars:
    """One rich bar per lm-eval request kind (loglikelihood, generate_until, …), on stderr."""

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.ids: dict[str, Any] = {}

    def __call__(self, kind: str, done: int, total: int) -> None:
        if kind not in self.ids:
            self.bars.start()
            self.ids[kind] = self.bars.add_task(kind, total=total)
        self.bars.update(self.ids[kind], completed=done, total=total)


def results_table(title: str, results: dict[str, dict[str, Any]]) -> Table:
    """Task, metric, value ± standard error, as lm-eval reports them (filter shown when not `none`)."""
    table = Table(title=title)
    for column in ("task", "metric", "value", "± stderr"):
        table.add_column(column, justify="right" if column in ("value", "± stderr") else "left")
    for task, metrics in results.items():
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if name.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{name}_stderr,{filt}")
            label = name if filt in ("", "none") else f"{name} ({filt})"
            table.add_row(task, label, f"{value:.4f}", f"{stderr:.4f}" if isinstance(stderr, (int, float)) else "")
    return table


def run_lm_eval(
    *,
    model: str,
    tasks: list[str],
    num_fewshot: int | None,
    limit: int | float | None,
    include_path: Path | None,
    out: Path,
    command: list[str],
    options: dict[str, Any],
    json_output: bool,
    quiet: bool,
) -> dict[str, Any]:
    """Load the model, open (or resume) the run directory, run lm-eval, store and print its results."""
    from mmx.cli_eval import check_out_dir
    from mmx.model.backend import load_backend
    from mmx.results.store import RunStore, sample_key
    from mmx.runner import run_metadata

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # mmx never downloads at run time unless told to
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    try:
        import lm_eval

        from mmx.tasks.lm_eval_bridge import MmxLM
    except ImportError:
        raise MmxError("lm-eval is not installed", "pip install 'mmx[lm-eval]'") from None
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    if include_path is not None and not include_path.is_dir():
        raise MmxError(f"--include-path {include_path} is not a directory", "pass the folder with your task YAMLs")
    manager = task_manager(tasks, include_path)
    check_out_dir(out)
    backend = load_backend(model, **options)
    described = backend.describe()
    params = {
        "tasks": tasks,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "include_path": str(include_path) if include_path else None,
        "include_sha256": include_fingerprint(include_path),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "model": {key: value for key, value in described.items() if key != "device"},
    }
    store = RunStore(out, on_corrupt=lambda m: print(f"warning: {m}", file=sys.stderr))
    resumed = store.open(run_metadata("lm-eval", command, "lm-eval", described, params))
    print(f"{'resuming' if resumed else 'writing'} run in {out} (resume with --out {out})", file=sys.stderr, flush=True)
    bars = _Bars() if not quiet and sys.stderr.isatty() else None
    lm = MmxLM(backend=backend, response_log=out / REQUESTS_FILE, progress=bars)
    try:
        output = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager, log_samples=True
        )
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command with --out {out} to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    except ConnectionError as err:  # datasets' offline mode refusing a download
        raise MmxError(
            f"lm-eval needs data that is not available offline ({err})",
            "use local data (--include-path) or cache the dataset, or set HF_DATASETS_OFFLINE=0 to allow downloads",
        ) from None
    finally:
        if bars is not None:
            bars.bars.stop()
    results = {
        task: {key: value for key, value in metrics.items() if "," in key or key == "alias"}  # metric,filter keys
        for task, metrics in {**output.get("results", {}), **output.get("groups", {})}.items()
    }
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=str) + "\n")
    kept = {key: output.get(key) for key in _OUTPUT_KEYS} | {"lm_eval_version": params["lm_eval_version"]}
    (out / OUTPUT_FILE).write_text(json.dumps(kept, indent=2, default=str) + "\n")
    done = store.done_keys()
    for task, logged in (output.get("samples") or {}).items():
        for record in sample_records(task, logged):
            if sample_key(record) not in done:
                store.append_sample(record)
    report = {"run_dir": str(out), "resumed": resumed, "model": described, "results": results}
    if json_output:
        print(json.dumps(report, indent=2, default=str))
    else:
        Console().print(results_table(f"lm-eval · {described.get('name', model)} · {out}", results))
    return report


_INCLUDE = typer.Option(None, "--include-path", help="A folder of your own task YAMLs (and their data).")
_OUT = typer.Option(None, "--out", help="Run directory; rerun with the same --out to resume (default: runs/…).")


@eval_app.command("lm-eval")
def lm_eval_command(
    tasks: str = typer.Option(..., "--tasks", help="Comma list of lm-eval task names (or globs)."),
    model: str = typer.Option("mmx-mini", "--model", help="Model spec: mmx-mini, mmx:PATH, random:…, hf:…, openai:…"),
    num_fewshot: int | None = typer.Option(None, "--num-fewshot", help="Few-shot examples (default: the task's)."),
    limit: str | None = typer.Option(None, "--limit", help="Documents per task: a count, or a fraction below 1."),
    include_path: Path | None = _INCLUDE,
    out: Path | None = _OUT,
    batch_size: int | None = flags.BATCH_SIZE,
    device: str = flags.DEVICE,
    dtype: str = flags.DTYPE,
    max_context: int | None = flags.MAX_CONTEXT,
    chat_template: str | None = flags.CHAT_TEMPLATE,
    tokenizer: str | None = flags.TOKENIZER,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    timeout: float | None = flags.TIMEOUT,
    retries: int | None = flags.RETRIES,
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run lm-evaluation-harness tasks on any mmx model; results land in an mmx run directory."""
    from mmx.cli_eval import default_out

    names = list(dict.fromkeys(t.strip() for t in tasks.split(",") if t.strip()))
    if not names:
        raise MmxError("no tasks given", "pass --tasks T1,T2")
    if num_fewshot is not None and num_fewshot < 0:
        raise MmxError(f"bad --num-fewshot {num_fewshot}", "use 0 or more")
    options = flags.backend_options(
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_context=max_context,
        chat_template=chat_template,
        tokenizer=tokenizer,
        api_model=api_model,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
    )
    out = out or default_out("lm-eval", model)
    command = ["mmx", "eval", "lm-eval", "--model", model, "--tasks", ",".join(names), "--out", str(out)]
    given = [("--num-fewshot", num_fewshot), ("--limit", limit), ("--include-path", include_path)]
    given += [("--batch-size", batch_size), ("--device", device), ("--dtype", dtype), ("--max-context", max_context)]
    given += [("--chat-template", chat_template), ("--tokenizer", tokenizer), ("--api-model", api_model)]
    given += [("--concurrency", concurrency), ("--timeout", timeout), ("--retries", retries)]
    for flag, value in given:
        if value is not None and value != "auto":
            command += [flag, str(value)]
    run_lm_eval(
        model=model,
        tasks=names,
        num_fewshot=num_fewshot,
        limit=parse_limit(limit),
        include_path=include_path,
        out=out,
        command=command,
        options=options,
        json_output=json_output,
        quiet=quiet,
    )
