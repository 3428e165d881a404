"""`mmx tasks list` and `mmx tasks show`: what the task suite contains, and exactly what a model would read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mmx.commands.app import app
from mmx.errors import MmxError
from mmx.sizes import format_size, parse_size

tasks_app = typer.Typer(help="The long-context tasks: list them, or print one generated prompt.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")

_COMMON = {"task", "category", "metric", "max_new_tokens", "answer_prefix"}


def _value(text: str) -> Any:
    """A task option's value from the command line: JSON where it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`["depths=5", "spacing=sigmoid"]` -> `{"depths": 5, "spacing": "sigmoid"}`."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MmxError(f"bad task option {pair!r}", "write options as KEY=VALUE, e.g. -o depths=5")
        options[key.strip().replace("-", "_")] = _value(value.strip())
    return options


def load_tokenizer(spec: str) -> Any:
    """`byte` (the embedded model's tokenizer) or the path of a `tokenizer.json` (or a folder holding one)."""
    if spec == "byte":
        from mmx.model import ByteTokenizer

        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise MmxError(f"no tokenizer at {spec!r}", "use --tokenizer byte or the path of a tokenizer.json")
    from mmx.model.tokenizer import JsonTokenizer

    return JsonTokenizer(path)


def brief(params: dict[str, Any], width: int = 48) -> str:
    """A task's own parameters, one per line: nested ones reduced to the corpus or data source they name, long lists
    to their length, long text cut to `width`."""
    lines = []
    for key, value in params.items():
        if key in _COMMON:
            continue
        if isinstance(value, dict):
            value = value.get("corpus") or value.get("source") or value.get("lines")
        elif isinstance(value, list) and len(value) > 4:
            value = f"{len(value)} values"
        if value is None:
            continue
        text = f"{key}={value}"
        lines.append(text if len(text) <= width else text[: width - 1] + "…")
    return "  ".join(lines)


@tasks_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print every task's full parameters as JSON."),
) -> None:
    """Every task with its category, metric, answer budget and parameters; the suites that include it."""
    from mmx.tasks import SUITES, get_task, list_tasks

    params = {name: get_task(name).params() for name in list_tasks()}
    if as_json:
        print(json.dumps({"suites": SUITES, "tasks": params}, indent=2))
        return
    table = Table(title="mmx tasks", show_lines=False)
    for column in ("name", "suite", "category", "metric", "answer\nbudget", "parameters"):
        table.add_column(column, no_wrap=column != "parameters")
    for name, p in params.items():
        suites = ",".join(s for s, names in SUITES.items() if name in names) or "–"
        shown = name if p["task"] == name else f"{name} → {p['task']}"
        metric = p["metric"].removeprefix("string_match_")
        table.add_row(shown, suites, p["category"], metric, str(p["max_new_tokens"]), brief(p))
    console = Console()
    console.print(table)
    console.print("metric: RULER's string_match_all / string_match_part. A → B: B runs in A's place (A's data is not")
    console.print("here; give it with -o A.data=PATH to mmx eval ruler or mmx tasks show); its results are labelled B")
    console.print("and its parameters say substitute_for. Options: mmx eval ruler|niah -o KEY=VALUE, as tasks show.")


@tasks_app.command("show")
def show_command(
    task: str = typer.Argument(..., help="Task name, e.g. niah_single_1 (see `mmx tasks list`)."),
    length: str = typer.Option("4k", "--length", "-l", help="Target length in tokens, incl. the answer budget."),
    index: int = typer.Option(0, "--index", "-i", help="Sample index."),
    seed: int = typer.Option(0, "--seed", help="Seed (the same seed, index and length give the same prompt)."),
    tokenizer: str = typer.Option("byte", "--tokenizer", help="byte, or the path of a tokenizer.json."),
    option: list[str] = typer.Option([], "--option", "-o", help="Task option KEY=VALUE (repeatable)."),  # noqa: B008
    no_answer_prefix: bool = typer.Option(False, "--no-answer-prefix", help="Build the prompt without the prefix."),
    elide: int = typer.Option(0, "--elide", help="Show only the first and last N characters of the prompt."),
) -> None:
    """Print one generated prompt exactly as the model reads it, then its references and metadata."""
    from mmx.tasks import get_task

    options = parse_options(option)
    if no_answer_prefix:
        options["answer_prefix"] = False
    chosen = get_task(task, **options)
    tok = load_tokenizer(tokenizer)
    sample = chosen.sample(tok, parse_size(length), index, seed)
    text = sample.prompt + sample.answer_prefix
    if elide and len(text) > 2 * elide:
        text = f"{text[:elide]}\n[… {len(text) - 2 * elide} characters …]\n{text[-elide:]}"
    print(text)
    console = Console(stderr=False, highlight=False)
    console.rule(f"{sample.task} · {format_size(sample.length)} · index {sample.index} · seed {seed}")
    console.print(f"prompt tokens: {sample.metadata['prompt_tokens']} (+ {sample.max_new_tokens} answer budget)")
    console.print(f"references: {json.dumps(sample.references, ensure_ascii=False)}")
    console.print(f"metadata: {json.dumps(sample.metadata, ensure_ascii=False)}")
    console.print(f"prompt hash: {sample.prompt_hash}")
