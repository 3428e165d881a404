"""`mmx eval lm-eval`: lm-evaluation-harness tasks on any mmx model, written as an mmx run directory (the work is
`mmx.workflows.lm_eval.suite`).

The run holds `run.json` (kind "lm-eval"), `lm_eval_results.json` (lm-eval's per-task metrics, which `mmx report`
shows), `lm_eval_output.json` (the rest of lm-eval's output: task configs, versions, sample counts), `samples.jsonl`
(one record per scored document) and `lm_eval_requests.jsonl` (every model answer, so an interrupted run resumes
without asking the model again). lm-eval's own options are accepted in its spelling too (`--apply_chat_template`,
`--gen_kwargs`, …); `--metadata` reaches the tasks (lm-eval's RULER reads its lengths and tokenizer there).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mmx.commands import flags
from mmx.commands.app import eval_app
from mmx.errors import MmxError
from mmx.results.rundir import default_out


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


def run_lm_eval(*, json_output: bool, quiet: bool, **request: Any) -> dict[str, Any]:
    """Run the suite with bars on stderr, then print lm-eval's table (or JSON)."""
    from mmx.workflows.lm_eval.suite import run_lm_eval as run

    bars = _Bars() if not quiet and sys.stderr.isatty() else None
    try:
        report = run(
            **request,
            progress=bars,
            announce=lambda line: print(line, file=sys.stderr, flush=True),
            warn=lambda m: print(f"warning: {m}", file=sys.stderr),
        )
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command with --out {request['out']} to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        if bars is not None:
            bars.bars.stop()
    if json_output:
        print(json.dumps(report, indent=2, default=str))
    else:
        title = f"lm-eval · {report['model'].get('name', request['model'])} · {request['out']}"
        Console().print(results_table(title, report["results"]))
    return report


_INCLUDE = typer.Option(
    None, "--include-path", "--include_path", help="A folder of your own task YAMLs (and their data)."
)
_OUT = typer.Option(None, "--out", help="Run directory; rerun with the same --out to resume (default: runs/…).")
_METADATA = typer.Option(
    None,
    "--metadata",
    help="Task metadata, JSON or key=value,...: e.g. '{\"max_seq_lengths\":[4096,8192]}' for lm-eval's RULER "
    "(the model's HF tokenizer is added as `tokenizer` unless given).",
)
_CHAT = typer.Option(
    False,
    "--apply-chat-template",
    "--apply_chat_template",
    help="Lay prompts out with the model's chat template (implies --chat-template auto).",
)
_MULTITURN = typer.Option(
    None, "--fewshot-as-multiturn/--no-fewshot-as-multiturn", "--fewshot_as_multiturn", help="Few-shot as chat turns."
)
_GEN_KWARGS = typer.Option(
    None, "--gen-kwargs", "--gen_kwargs", help="Generation settings for every task, JSON or key=value,..."
)
_OUTPUT_PATH = typer.Option(
    None, "--output-path", "--output_path", help="Also write lm-eval's own result files here (as lm_eval does)."
)
_LOG_SAMPLES = typer.Option(
    False, "--log-samples", "--log_samples", help="With --output-path: lm-eval's per-sample files too."
)


@eval_app.command("lm-eval")
def lm_eval_command(
    tasks: str = typer.Option(..., "--tasks", help="Comma list of lm-eval task names (or globs)."),
    model: str = typer.Option("mmx-mini", "--model", help="Model spec: mmx-mini, mmx:PATH, random:…, hf:…, openai:…"),
    num_fewshot: int | None = typer.Option(
        None, "--num-fewshot", "--num_fewshot", help="Few-shot examples (default: the task's)."
    ),
    limit: str | None = typer.Option(None, "--limit", help="Documents per task: a count, or a fraction below 1."),
    include_path: Path | None = _INCLUDE,
    out: Path | None = _OUT,
    metadata: str | None = _METADATA,
    apply_chat_template: bool = _CHAT,
    fewshot_as_multiturn: bool | None = _MULTITURN,
    gen_kwargs: str | None = _GEN_KWARGS,
    output_path: Path | None = _OUTPUT_PATH,
    log_samples: bool = _LOG_SAMPLES,
    batch_size: int | None = flags.BATCH_SIZE,
    device: str = flags.DEVICE,
    dtype: str = flags.DTYPE,
    max_context: int | None = flags.MAX_CONTEXT,
    chat_template: str | None = flags.CHAT_TEMPLATE,
    system_prompt: str | None = flags.SYSTEM_PROMPT,
    model_args: str | None = flags.MODEL_ARGS,
    tokenizer: str | None = flags.TOKENIZER,
    api: str | None = flags.API,
    api_model: str | None = flags.API_MODEL,
    concurrency: int | None = flags.CONCURRENCY,
    timeout: float | None = flags.TIMEOUT,
    retries: int | None = flags.RETRIES,
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run lm-evaluation-harness tasks on any mmx model; results land in an mmx run directory."""
    from mmx.model.backends.common import backend_options, parse_model_args

    names = list(dict.fromkeys(t.strip() for t in tasks.split(",") if t.strip()))
    if not names:
        raise MmxError("no tasks given", "pass --tasks T1,T2")
    if num_fewshot is not None and num_fewshot < 0:
        raise MmxError(f"bad --num-fewshot {num_fewshot}", "use 0 or more")
    if apply_chat_template and chat_template is None:
        chat_template = "auto"
    options = backend_options(
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_context=max_context,
        chat_template=chat_template,
        system_prompt=system_prompt,
        model_args=model_args,
        tokenizer=tokenizer,
        api=api,
        api_model=api_model,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
    )
    out = out or default_out("lm-eval", model)
    command = ["mmx", "eval", "lm-eval", "--model", model, "--tasks", ",".join(names), "--out", str(out)]
    given = [("--num-fewshot", num_fewshot), ("--limit", limit), ("--include-path", include_path)]
    given += [("--batch-size", batch_size), ("--device", device), ("--dtype", dtype), ("--max-context", max_context)]
    given += [("--metadata", metadata), ("--gen-kwargs", gen_kwargs), ("--output-path", output_path)]
    given += [("--chat-template", chat_template), ("--system-prompt", system_prompt), ("--model-args", model_args)]
    given += [("--tokenizer", tokenizer), ("--api", api), ("--api-model", api_model)]
    given += [("--concurrency", concurrency), ("--timeout", timeout), ("--retries", retries)]
    given += [("--apply-chat-template", apply_chat_template or None), ("--log-samples", log_samples or None)]
    given += [("--fewshot-as-multiturn" if fewshot_as_multiturn else "--no-fewshot-as-multiturn", fewshot_as_multiturn)]
    for flag, value in given:
        if value is True or (value is False and flag.startswith("--no-")):
            command.append(flag)
        elif value not in (None, False, "auto"):
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
        metadata=_settings("--metadata", metadata, parse_model_args),
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=fewshot_as_multiturn,
        gen_kwargs=_settings("--gen-kwargs", gen_kwargs, parse_model_args),
        output_path=output_path,
        log_samples=log_samples,
        json_output=json_output,
        quiet=quiet,
    )


def _settings(flag: str, text: str | None, parse: Any) -> dict[str, Any] | None:
    """A JSON or key=value option as a dict (the parser's messages name --model-args; say which flag it was)."""
    try:
        return parse(text) or None
    except MmxError as err:
        raise MmxError(err.message.replace("--model-args", flag), err.hint) from None
