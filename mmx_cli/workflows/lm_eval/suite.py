"""lm-evaluation-harness tasks on any mmx backend, written as an mmx run directory.

The run holds `run.json` (kind "lm-eval"), `lm_eval_results.json` (lm-eval's per-task metrics, which `mmx report`
shows), `lm_eval_output.json` (the rest of lm-eval's output: task configs, versions, sample counts), `samples.jsonl`
(one record per scored document) and `lm_eval_requests.jsonl` (every model answer, so an interrupted run resumes
without asking the model again). lm-eval's own options pass through (`metadata`, `apply_chat_template`,
`fewshot_as_multiturn`, `gen_kwargs`, `output_path` + `log_samples` for lm-eval's own result files), so its RULER
tasks get their lengths and tokenizer. Datasets download when online and come from the local cache under
`HF_DATASETS_OFFLINE` / `HF_HUB_OFFLINE`, as with lm-eval itself. lm-eval's progress bars and git probe stay quiet:
the run's progress is mmx's own.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmx.errors import MmxError
from mmx.files import atomic_write
from mmx.model.backends.base import load_backend
from mmx.results.lock import RunLock
from mmx.results.rundir import check_out_dir
from mmx.results.store import RunStore, sample_key
from mmx.workflows.provenance import git_commit, run_metadata

RESULTS_FILE = "lm_eval_results.json"
OUTPUT_FILE = "lm_eval_output.json"
REQUESTS_FILE = "lm_eval_requests.jsonl"
# Parts of lm-eval's output worth keeping beside the results (its `samples` become samples.jsonl; its environment
# dump repeats run.json's versions and hardware).
_OUTPUT_KEYS = ("groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config")


def include_fingerprint(directory: Path | None) -> str | None:
    """SHA-256 over the include directory's files (names and bytes): a changed task definition refuses to resume."""
    if directory is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def task_manager(names: list[str], include_path: Path | None, metadata: dict[str, Any] | None = None) -> Any:
    """lm-eval's TaskManager: only the include directory when it has every task (indexing lm-eval's own ~15k task
    files takes seconds), else both; `metadata` reaches every task (RULER's lengths and tokenizer). Unknown task
    names are one MmxError with the nearest known names."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata)
        if all(local.match_tasks([name]) for name in names):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path else None, metadata=metadata)
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


def task_metadata(given: dict[str, Any] | None, model: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """`--metadata` for lm-eval's tasks, plus the model's Hugging Face tokenizer where the user named none (an `hf:`
    model's own, an `openai:` model's `--tokenizer`): tasks that build their own prompts (lm-eval's RULER) size them
    with the `tokenizer` in their metadata."""
    metadata = dict(given or {})
    prefix, _, rest = model.partition(":")
    tokenizer = rest if prefix == "hf" else options.get("tokenizer") if prefix == "openai" else None
    if tokenizer in ("remote", "byte", "estimate", "auto"):
        tokenizer = None
    if tokenizer and not any(metadata.get(key) for key in ("tokenizer", "pretrained")):
        metadata["tokenizer"] = tokenizer
    return metadata or None


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """lm-eval without its tqdm bars or its `git describe` probe (which prints "fatal: not a git repository" outside
    one): tqdm bars default to off (a bar asked for explicitly still shows), datasets' bars are off, and lm-eval
    records mmx's own commit. Everything is put back afterwards."""
    import lm_eval.evaluator as evaluator
    import tqdm.std

    original_init, original_hash = tqdm.std.tqdm.__init__, evaluator.get_git_commit_hash
    tqdm.std.tqdm.__init__ = functools.partialmethod(original_init, disable=True)
    evaluator.get_git_commit_hash = git_commit
    bars = None
    try:
        import datasets

        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = original_init
        evaluator.get_git_commit_hash = original_hash
        if bars:
            datasets.enable_progress_bars()


def save_lm_eval_files(output: dict[str, Any], output_path: Path, log_samples: bool) -> None:
    """lm-eval's own result files (and per-task sample files with `log_samples`), written as its CLI writes them."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(output_path))
    tracker.general_config_tracker.model_name_sanitized = "mmx"
    results = {key: value for key, value in output.items() if key != "samples"}
    samples = output.get("samples") if log_samples else None
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples:
        for task in results.get("configs", {}):
            tracker.save_results_samples(task_name=task, samples=samples[task])


def run_lm_eval(*, out: Path, command: list[str], **request: Any) -> dict[str, Any]:
    """Load the model, open (or resume) the run directory, run lm-eval, store its results; return the report
    (run directory, whether it resumed, the model, per-task metrics). The run directory is held (`RunLock`) throughout,
    so a second run on it is refused."""
    check_out_dir(out, "lm-eval")
    with RunLock(out, command):
        return _run_lm_eval(out=out, command=command, **request)


def _run_lm_eval(
    *,
    model: str,
    tasks: list[str],
    num_fewshot: int | None,
    limit: int | float | None,
    include_path: Path | None,
    out: Path,
    command: list[str],
    options: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    apply_chat_template: bool | str = False,
    fewshot_as_multiturn: bool | None = None,
    gen_kwargs: dict[str, Any] | str | None = None,
    output_path: Path | None = None,
    log_samples: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    announce: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`run_lm_eval` once the run directory is held."""
    if log_samples and output_path is None:
        raise MmxError("--log-samples writes lm-eval's sample files under --output-path", "add --output-path DIR")
    if fewshot_as_multiturn and not apply_chat_template:
        raise MmxError("--fewshot-as-multiturn needs a chat template", "add --apply-chat-template")
    try:
        import lm_eval

        from mmx.workflows.lm_eval.adapter import MmxLM
    except ImportError:
        raise MmxError("lm-eval is not installed", "pip install 'mmx[lm-eval]'") from None
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    if include_path is not None and not include_path.is_dir():
        raise MmxError(f"--include-path {include_path} is not a directory", "pass the folder with your task YAMLs")
    metadata = task_metadata(metadata, model, options)
    manager = task_manager(tasks, include_path, metadata)
    backend = load_backend(model, **options)
    described = backend.describe()
    chat = bool(apply_chat_template)
    evaluate_options = {
        "num_fewshot": num_fewshot,
        "limit": limit,
        "apply_chat_template": apply_chat_template,
        "fewshot_as_multiturn": (chat if fewshot_as_multiturn is None else fewshot_as_multiturn) and chat,
        "gen_kwargs": gen_kwargs,
        "metadata": metadata,
    }
    params = {
        "tasks": tasks,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "include_path": str(include_path) if include_path else None,
        "include_sha256": include_fingerprint(include_path),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "model": {key: value for key, value in described.items() if key != "device"},
    }
    optional = ("metadata", "apply_chat_template", "fewshot_as_multiturn", "gen_kwargs")
    params |= {key: evaluate_options[key] for key in optional if evaluate_options[key]}  # when set: older runs resume
    store = RunStore(out, on_corrupt=warn)
    resumed = store.open(run_metadata("lm-eval", command, "lm-eval", described, params))
    if announce is not None:
        announce(f"{'resuming' if resumed else 'writing'} run in {out} (resume with --out {out})")
    lm = MmxLM(
        backend=backend, batch_size=options.get("batch_size"), response_log=out / REQUESTS_FILE, progress=progress
    )
    output = _evaluate(lm, tasks, manager, evaluate_options)
    results = _store_output(store, output, params["lm_eval_version"])
    if output_path is not None:
        save_lm_eval_files(output, output_path, log_samples)
    return {"run_dir": str(out), "resumed": resumed, "model": described, "results": results}


def _evaluate(lm: Any, tasks: list[str], manager: Any, options: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's `simple_evaluate`, quiet, with its data errors as one line each."""
    import lm_eval

    try:
        with quiet_lm_eval():
            return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True, **options)
    except ConnectionError as err:  # datasets' offline mode refusing a download
        raise MmxError(
            f"lm-eval needs data that is not available offline ({err})",
            "use local data (--include-path), cache the dataset while online, or unset HF_DATASETS_OFFLINE",
        ) from None
    except FileNotFoundError as err:  # a task file naming data that is not there
        raise MmxError(
            f"a task's data is missing ({str(err).strip().splitlines()[0][:200]})",
            "check the dataset_path / data_files of the task's YAML",
        ) from None


def _store_output(store: RunStore, output: dict[str, Any], version: str | None) -> dict[str, Any]:
    """Write lm-eval's metrics and kept output atomically and append the samples not yet recorded; returns the
    metrics per task."""
    results = {
        task: {key: value for key, value in metrics.items() if "," in key or key == "alias"}  # metric,filter keys
        for task, metrics in {**output.get("results", {}), **output.get("groups", {})}.items()
    }
    atomic_write(store.dir / RESULTS_FILE, json.dumps(results, indent=2, default=str) + "\n")
    kept = {key: output.get(key) for key in _OUTPUT_KEYS} | {"lm_eval_version": version}
    atomic_write(store.dir / OUTPUT_FILE, json.dumps(kept, indent=2, default=str) + "\n")
    done = store.done_keys()
    for task, logged in (output.get("samples") or {}).items():
        for record in sample_records(task, logged):
            if sample_key(record) not in done:
                store.append_sample(record)
    return results
