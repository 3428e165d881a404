"""`mmx train`: train (or keep training) a MiniMax-style model on packed, offline-generated task documents."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mmx.commands.app import app
from mmx.errors import MmxError
from mmx.results.lock import RunLock
from mmx.sizes import format_size, parse_size

_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _resolve_init(spec: str) -> str:
    """A model directory from `PATH`, `mmx:PATH` or the name of a shipped model."""
    import mmx.model

    path = Path(spec.removeprefix("mmx:"))
    shipped = Path(mmx.model.__file__).parent / "weights" / spec
    for candidate in (path, shipped):
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise MmxError(f"no model directory at {spec!r}", "pass a directory with config.json, mmx:PATH or a shipped model")


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    """`--set rope_theta=1e7 --set rotary_dim=8`: config fields with JSON-ish values."""
    import dataclasses
    import json

    from mmx.model import MiniMaxConfig

    names = {f.name for f in dataclasses.fields(MiniMaxConfig)}
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in names:
            raise MmxError(f"bad --set {pair!r}", "write FIELD=VALUE with a MiniMaxConfig field, e.g. rope_theta=1e7")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            raise MmxError(f"bad value in --set {pair!r}", "values are JSON: numbers, true/false, [0, 1]") from None
    return overrides


def _check_numbers(**values: float | None) -> None:
    """Rates, clips and limits must be finite; all but the weight decay (which may be 0) positive."""
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        least_zero = key == "weight_decay"
        kind = "non-negative" if least_zero else "positive"
        if value is not None and not (math.isfinite(value) and (value >= 0 if least_zero else value > 0)):
            raise MmxError(f"{flag} must be a {kind} number, got {value}", f"pass a {kind}, finite {flag}")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MmxError(f"bad --device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MmxError("--device cuda but no CUDA device is visible", "use --device cpu")
    return device


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory; rerunning on it resumes from its checkpoint.")],
    stages: str = typer.Option("4k:200", help="Row length and steps per stage: LEN:STEPS[:ROPE_THETA],…"),
    data: str = typer.Option(
        "drill=4,ruler=2,niah=1",
        help="Task, suite or dense-source (drill, recall) names with optional weights (default: mmx-mini's mix).",
    ),
    model: str = typer.Option("mmx-mini", "--model", help="Architecture preset for a model trained from scratch."),
    init: str | None = typer.Option(None, help="Start from these weights instead (directory, mmx:PATH or name)."),
    config_set: Annotated[list[str] | None, typer.Option("--set", help="Override a config field, FIELD=VALUE.")] = None,
    batch_tokens: str = typer.Option("128k", help="Tokens per optimizer step."),
    micro_tokens: str | None = typer.Option(None, help="Tokens per forward pass (default: the whole batch)."),
    min_doc_len: str = typer.Option("1k", help="Shortest task length drawn for a document."),
    align: int = typer.Option(256, help="Pad each document to a multiple of this many tokens (bounds shapes)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate."),
    min_lr_ratio: float = typer.Option(0.1, help="Final learning rate as a fraction of the peak."),
    warmup: int = typer.Option(50, help="Warm-up steps."),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay on matrices."),
    grad_clip: float = typer.Option(1.0, help="Clip the gradient norm to this."),
    context_weight: float = typer.Option(0.1, help="Loss weight of prompt tokens (answer tokens weigh 1)."),
    seed: int = typer.Option(0, help="Seed of the initial weights and of the training documents."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(0, help="Extra processes generating documents (0: in the training process)."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    time_limit: float | None = typer.Option(None, help="Stop (checkpoint + export) before this many seconds pass."),
    export_dtype: str = typer.Option("fp32", help="dtype of the exported model: fp32 or bf16."),
    log_every: int = typer.Option(25, help="Without a terminal, print a line every this many steps (0: never)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train a model on packed task documents; the result is RUN/model, usable as `--model mmx:RUN/model`."""
    from mmx.results.rundir import check_out_dir
    from mmx.workflows.provenance import run_metadata
    from mmx.workflows.train import TrainConfig, check_architecture, open_run, parse_mix, parse_stages

    if export_dtype not in _DTYPES:
        raise MmxError(f"bad --export-dtype {export_dtype!r}", "use fp32 or bf16")
    _check_numbers(lr=lr, grad_clip=grad_clip, weight_decay=weight_decay, time_limit=time_limit)
    if not 0 <= context_weight <= 1 or not 0 <= min_lr_ratio <= 1:
        raise MmxError("--context-weight and --min-lr-ratio must lie in [0, 1]", "pass a fraction")
    for name, value, least in (("--checkpoint-every", checkpoint_every, 1), ("--warmup", warmup, 0)):
        if value < least:
            raise MmxError(f"{name} must be at least {least}, got {value}", f"pass {name} {max(least, 1)} or more")
    if log_every < 0:
        raise MmxError(f"--log-every must be 0 or more, got {log_every}", "0 prints no step lines")
    stage_list = parse_stages(stages)
    batch = parse_size(batch_tokens)
    if align < 1 or any(s.seq_len % align for s in stage_list):
        raise MmxError(f"row lengths must be multiples of --align {align}", "use sizes like 4k, 16k or --align 1")
    longest = max(s.seq_len for s in stage_list)
    if longest > batch:
        raise MmxError(f"--batch-tokens {batch} is shorter than a row of {longest}", "raise --batch-tokens")
    config = TrainConfig(
        stages=stage_list,
        data=parse_mix(data, parse_size(min_doc_len)),
        preset=model,
        init=_resolve_init(init) if init else None,
        batch_tokens=batch,
        micro_tokens=parse_size(micro_tokens) if micro_tokens else batch,
        lr=lr,
        min_lr_ratio=min_lr_ratio,
        warmup=warmup,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        context_weight=context_weight,
        align=align,
        seed=seed,
        config_overrides=_parse_overrides(config_set or []),
    )
    check_architecture(config.init, model, config.config_overrides)  # before any work
    if workers < 0:
        raise MmxError("--workers must be 0 or more", "0 generates documents in the training process")
    dev = _device(device)
    argv = ["mmx", "train", "--out", str(out), *(["--init", init] if init else ["--model", model])]
    options = {
        "--stages": ",".join(str(s) for s in stage_list),
        "--data": data,
        "--batch-tokens": batch_tokens,
        "--micro-tokens": micro_tokens or batch_tokens,
        "--min-doc-len": min_doc_len,
        "--align": align,
        "--lr": lr,
        "--min-lr-ratio": min_lr_ratio,
        "--warmup": warmup,
        "--weight-decay": weight_decay,
        "--grad-clip": grad_clip,
        "--context-weight": context_weight,
        "--seed": seed,
        "--workers": workers,
        "--checkpoint-every": checkpoint_every,
        "--export-dtype": export_dtype,
    }
    argv += [part for pair in options.items() for part in (pair[0], str(pair[1]))]
    argv += [part for pair in config_set or [] for part in ("--set", pair)]
    argv += ["--time-limit", str(time_limit)] if time_limit is not None else []
    check_out_dir(out, "train")  # before the lock writes anything there
    with RunLock(out, argv):  # one training process per run directory
        open_run(out, run_metadata("train", argv, "train", {"preset": model, "init": config.init}, config.to_dict()))
        _train(config, out, dev, workers, checkpoint_every, time_limit, export_dtype, log_every, quiet)


def _train(
    config: Any,
    out: Path,
    dev: Any,
    workers: int,
    checkpoint_every: int,
    time_limit: float | None,
    export_dtype: str,
    log_every: int,
    quiet: bool,
) -> None:
    """Build (or resume) the trainer and run it with progress; Ctrl-C says how to resume."""
    import torch

    from mmx.workflows.train import Trainer

    interactive = sys.stdout.isatty() and not quiet
    printer = _StepPrinter(config.total_steps, log_every) if not interactive and not quiet and log_every > 0 else None
    progress = _ProgressLine(config.total_steps) if interactive else None
    trainer = Trainer(
        config,
        out,
        dev,
        workers=workers,
        checkpoint_every=checkpoint_every,
        time_limit_s=time_limit,
        export_dtype=getattr(torch, _DTYPES[export_dtype]),
        on_step=progress or printer,
    )
    if trainer.resumed_from is not None and not quiet:
        print(f"resuming {out} at step {trainer.resumed_from}", file=sys.stderr)
    try:
        if progress:
            with progress.start(trainer.step):
                result = trainer.run()
        else:
            result = trainer.run()
    except KeyboardInterrupt:
        trainer.stream.close()
        where = f"step {trainer.checkpoint_step}" if trainer.checkpoint_step else "the start (no checkpoint yet)"
        print(f"interrupted: rerun the same command to resume from {where}", file=sys.stderr)
        raise typer.Exit(130) from None
    if not quiet:
        state = "stopped at the time limit" if result["stopped_early"] else "done"
        steps = f"{result['steps']}/{result['total_steps']} steps in {result['wall_s']} s"
        print(f"{state}: {steps}; model in {result['exported']} (use --model mmx:{result['exported']})")


def _stats(m: dict[str, Any]) -> str:
    return (
        f"loss {m['loss']:.3f}  answer {m['answer_acc']:.1%}  {m['tokens_per_s'] / 1e3:,.0f}k tok/s  "
        f"row {format_size(m['seq_len'])}  lr {m['lr']:.1e}"
    )


class _ProgressLine:
    """The rich progress line: steps, loss, answer-token accuracy, tokens/s, ETA."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total = total
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
        )
        self.task = None

    def start(self, step: int):
        self.task = self.progress.add_task("train", total=self.total, completed=step, stats="")
        return self.progress

    def __call__(self, metrics: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=metrics["step"], stats=_stats(metrics))


class _StepPrinter:
    """Without a terminal: one plain line every `every` steps (and the last), for logs."""

    def __init__(self, total: int, every: int) -> None:
        self.total = total
        self.every = every

    def __call__(self, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if step % self.every == 0 or step == self.total:
            print(f"step {step}/{self.total}  {_stats(metrics)}  {metrics['elapsed_s']:.0f}s", flush=True)
