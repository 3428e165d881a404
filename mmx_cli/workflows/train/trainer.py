"""The training loop: packed batches, AdamW with warm-up + cosine, bf16 autocast on GPU, clipping, exact resume.

A run directory holds `train.json` (written once: command, parameters, versions, hardware, commit), `metrics.jsonl`
(one line per step), `checkpoint/` (the latest state, see `checkpoint.py`) and, at the end, `model/` (the exported
weights, loadable as `mmx:RUN/model`). Running again on the same directory with the same parameters resumes from
the checkpoint and continues exactly as if never stopped; other parameters are refused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mmx.errors import MmxError
from mmx.files import atomic_write, read_json, validated
from mmx.model import ByteTokenizer, MiniMaxConfig, MiniMaxForCausalLM
from mmx.results.rundir import TRAIN_FILE, check_out_dir
from mmx.results.schema import RunMeta
from mmx.results.store import read_jsonl, run_identity
from mmx.workflows.train.checkpoint import find_checkpoint, load_trainer_state, save_checkpoint, set_rng_state
from mmx.workflows.train.data import DataMix, DocumentStream
from mmx.workflows.train.loss import packed_loss
from mmx.workflows.train.packing import Packer
from mmx.workflows.train.schedule import Stage, WarmupCosine, stage_at

METRICS_FILE = "metrics.jsonl"
CHECKPOINT = "checkpoint"
EXPORT = "model"


@dataclass
class TrainConfig:
    """Everything that determines the trained weights; a resume must match it exactly."""

    stages: list[Stage]
    data: DataMix
    preset: str = "mmx-mini"
    init: str | None = None  # a model directory to start from instead of random weights
    batch_tokens: int = 1 << 17  # tokens per optimizer step (rows × row length)
    micro_tokens: int = 1 << 17  # tokens per forward pass; a step accumulates batch/micro of them
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    context_weight: float = 0.1  # loss weight of prompt tokens; answer tokens weigh 1
    lookahead: int = 8  # documents the packer may choose from when filling a row
    align: int = 256  # document segments are padded to a multiple of this (bounds the lengths attention sees)
    seed: int = 0
    config_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["stages"] = [str(s) for s in self.stages]
        raw["data"] = self.data.to_dict()
        raw["betas"] = list(self.betas)
        return raw


def build_model(config: TrainConfig, device: torch.device) -> MiniMaxForCausalLM:
    """A fresh model from the preset (seeded), or the weights of `config.init`."""
    if config.init:
        model = MiniMaxForCausalLM.from_pretrained(config.init, device=device, dtype=torch.float32)
        if config.config_overrides:
            model = with_config(model, **config.config_overrides)
        return model
    model = MiniMaxForCausalLM(dataclasses.replace(MiniMaxConfig.from_name(config.preset), **config.config_overrides))
    model.init_weights(seed=config.seed)
    return model.to(device=device, dtype=torch.float32)


def check_architecture(init: str | None, preset: str, overrides: dict[str, Any]) -> None:
    """The model to train, with `--set` applied, must be a valid config (an unknown preset, a wrong-typed value or an
    impossible shape is one MmxError), and started from `init` weights it must keep every weight's shape."""
    base = MiniMaxConfig.from_pretrained(init) if init else MiniMaxConfig.from_name(preset)
    changed = MiniMaxConfig.from_dict({**base.to_dict(), **overrides}, where="--set")
    if not init:
        return
    with torch.device("meta"):
        before = {name: p.shape for name, p in MiniMaxForCausalLM(base).named_parameters()}
        after = {name: p.shape for name, p in MiniMaxForCausalLM(changed).named_parameters()}
    reshaped = sorted(name for name in {*before, *after} if before.get(name) != after.get(name))
    if reshaped:
        raise MmxError(
            f"cannot carry weights across the config change: {reshaped[:3]} are missing or change shape",
            "change only fields that keep the weights' shapes (e.g. rope_theta), or train from scratch",
        )


def with_config(model: MiniMaxForCausalLM, **changes: Any) -> MiniMaxForCausalLM:
    """The same weights in a model rebuilt with config fields changed (e.g. a new RoPE base): buffers are recomputed."""
    device = next(model.parameters()).device
    rebuilt = MiniMaxForCausalLM(dataclasses.replace(model.config, **changes)).to(device=device, dtype=torch.float32)
    params = dict(model.named_parameters())
    missing = [name for name, p in rebuilt.named_parameters() if name not in params or params[name].shape != p.shape]
    if missing:
        raise MmxError(
            f"cannot carry weights across the config change: {missing[:3]} are missing or change shape",
            "change only fields that keep the weights' shapes (e.g. rope_theta), or train from scratch",
        )
    with torch.no_grad():
        for name, param in rebuilt.named_parameters():
            param.copy_(params[name])
    return rebuilt


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices decay, norm gains do not (decaying a gain towards 0 only fights the norm)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type == "cuda")


class MetricsRecord(BaseModel):
    """One line of `metrics.jsonl`: the step it describes (the rest is free-form numbers)."""

    model_config = ConfigDict(extra="allow")

    step: Annotated[int, Field(strict=True, gt=0)]


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, other objects their text), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def open_run(run_dir: Path, meta: dict[str, Any]) -> bool:
    """Write `train.json`, or check an existing one has the same parameters. True when the run already exists.

    `--out` must be new, empty or a training run; a run that lost its `train.json` resumes only when its checkpoint
    was made with these very parameters (else its weights would be labelled with parameters that did not make them).
    """
    hint = "restore it from a copy, or pass a new --out directory"
    check_out_dir(run_dir, "train")
    path = run_dir / TRAIN_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MmxError(f"cannot create {run_dir}: {err.strerror}", "choose another --out directory") from None
    params = _plain(meta["params"])
    if path.exists():
        raw = read_json(path, hint)
        validated(RunMeta, raw, str(path), hint)
        old = _plain(raw.get("params") or {})
        if old != params:
            diff = sorted(k for k in {*old, *params} if old.get(k) != params.get(k))
            raise MmxError(
                f"{run_dir} holds a training run with different parameters ({', '.join(diff)})",
                "rerun with the original parameters to resume, or pass a new --out directory",
            )
        return True
    checkpoint = find_checkpoint(run_dir, CHECKPOINT)
    if checkpoint is not None and _plain(load_trainer_state(checkpoint, torch.device("cpu"))["config"]) != params:
        raise MmxError(
            f"{run_dir} holds a checkpoint of another training run but no {TRAIN_FILE}",
            f"restore that run's {TRAIN_FILE} to resume it, or pass a new --out directory",
        )
    identity = run_identity("train", params)
    atomic_write(path, json.dumps({**meta, "run_id": identity}, indent=2, sort_keys=True, default=str) + "\n")
    return checkpoint is not None


StepCallback = Callable[[dict[str, Any]], None]


@contextmanager
def _training_kernels(device: torch.device) -> Iterator[None]:
    """bf16 autocast on GPU, and softmax attention kept off cuDNN, which builds a plan for every new sequence length
    (a packed batch brings dozens of new document lengths each step); flash attention needs none."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(backends):
        yield


class Trainer:
    """Runs (or resumes) one training run in `run_dir`. `on_step` receives each step's metrics (for progress)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        device: torch.device,
        workers: int = 0,
        checkpoint_every: int = 100,
        time_limit_s: float | None = None,
        export_dtype: torch.dtype = torch.float32,
        on_step: StepCallback | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.device = device
        self.checkpoint_every = checkpoint_every
        self.time_limit_s = time_limit_s
        self.export_dtype = export_dtype
        self.on_step = on_step
        run_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer = ByteTokenizer()
        self.schedule = WarmupCosine(config.lr, config.total_steps, config.warmup, config.min_lr_ratio)
        self.stream = DocumentStream(config.data, config.seed, workers=workers)
        self.step = 0
        self.packer: Packer | None = None
        self._resume()
        self.checkpoint_step = self.step  # the step a rerun would resume from
        self._trim_metrics()

    # --- state -----------------------------------------------------------------------------------------------------
    def _resume(self) -> None:
        ckpt = find_checkpoint(self.run_dir, CHECKPOINT)
        if ckpt is None:
            self.model = build_model(self.config, self.device)
            self.optimizer = make_optimizer(self.model, self.config, self.device)
            self.resumed_from = None
            return
        self.model = MiniMaxForCausalLM.from_pretrained(ckpt, device=self.device, dtype=torch.float32)
        self.optimizer = make_optimizer(self.model, self.config, self.device)
        state = load_trainer_state(ckpt, torch.device("cpu"))
        if _plain(state["config"]) != _plain(self.config.to_dict()):
            raise MmxError(
                f"{ckpt} was made by a training run with other parameters",
                "rerun with that run's parameters to resume it, or pass a new --out directory",
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        packer = state["packer"]
        self.packer = self._new_packer(packer["seq_len"], packer["next_index"], packer["waiting"])
        set_rng_state(state["rng"])
        self.resumed_from = self.step

    def _trim_metrics(self) -> None:
        """Keep one `metrics.jsonl` line per step up to the checkpoint: steps logged after it (by a run stopped before
        its next checkpoint) are trained again on resume and logged again, so their first lines go."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        kept: dict[int, dict[str, Any]] = {}
        for record in read_jsonl(path, schema=MetricsRecord, what="training step"):
            if record["step"] <= self.step:
                kept.setdefault(record["step"], record)
        if len(kept) != lines:
            atomic_write(path, "".join(json.dumps(kept[step]) + "\n" for step in sorted(kept)), "check --out")

    def _new_packer(self, seq_len: int, next_index: int, waiting: list[int] | None = None) -> Packer:
        return Packer(
            self.stream.fetcher(seq_len), seq_len, self.config.lookahead, next_index, waiting, self.config.align
        )

    def _trainer_state(self) -> dict[str, Any]:
        assert self.packer is not None
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "packer": {"seq_len": self.packer.seq_len, **self.packer.state()},
            "config": self.config.to_dict(),
        }

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, self.model, self._trainer_state())
        self.checkpoint_step = self.step

    def export(self) -> Path:
        """The final weights as a model directory (`mmx:RUN/model`), in `export_dtype`."""
        target = self.run_dir / EXPORT
        self.model.to(self.export_dtype).save_pretrained(target)
        self.model.to(torch.float32)
        return target

    # --- stages ----------------------------------------------------------------------------------------------------
    def _rope_theta_at(self, stage_index: int) -> float | None:
        """The RoPE base the latest stage up to `stage_index` asks for (None: keep the model's own)."""
        for stage in reversed(self.config.stages[: stage_index + 1]):
            if stage.rope_theta is not None:
                return stage.rope_theta
        return None

    def _enter_stage(self, stage_index: int) -> Stage:
        """Make the packer and the model match the stage of the current step (a no-op within a stage)."""
        stage = self.config.stages[stage_index]
        if self.packer is None or self.packer.seq_len != stage.seq_len:
            # a new row length starts from the next unread document; documents waiting for the old rows are dropped
            self.packer = self._new_packer(stage.seq_len, self.packer.next_index if self.packer else 0)
        theta = self._rope_theta_at(stage_index)
        if theta is not None and self.model.config.rope_theta != theta:
            optimizer_state = self.optimizer.state_dict()
            self.model = with_config(self.model, rope_theta=theta)
            self.optimizer = make_optimizer(self.model, self.config, self.device)
            self.optimizer.load_state_dict(optimizer_state)
        return stage

    # --- the loop --------------------------------------------------------------------------------------------------
    def train_step(self, stage: Stage) -> dict[str, Any]:
        """One optimizer step over `batch_tokens` tokens of packed rows, in micro-batches; returns its metrics."""
        assert self.packer is not None
        rows = max(1, self.config.batch_tokens // stage.seq_len)
        per_micro = max(1, min(rows, self.config.micro_tokens // stage.seq_len))
        batches = [
            self.packer.batch(min(per_micro, rows - r), self.tokenizer.pad_id, self.config.context_weight)
            for r in range(0, rows, per_micro)
        ]
        total_weight = sum(float(b.weights.sum()) for b in batches)
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss_sum = answer_nll = 0.0
        answer_tokens = answer_correct = 0
        for batch in batches:
            with _training_kernels(self.device):
                parts = packed_loss(self.model, batch.to(self.device))
            (parts.weighted_nll / total_weight).backward()
            loss_sum += float(parts.weighted_nll.detach())
            answer_nll += parts.answer_nll
            answer_tokens += parts.answer_tokens
            answer_correct += parts.answer_correct
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = sum(b.tokens for b in batches)
        return {
            "lr": lr,
            "loss": loss_sum / total_weight,
            "answer_loss": answer_nll / max(1, answer_tokens),
            "answer_acc": answer_correct / max(1, answer_tokens),
            "grad_norm": float(grad_norm),
            "tokens": tokens,
            "documents": sum(b.documents for b in batches),
            "pad_fraction": round(sum(b.padding for b in batches) / tokens, 4),
            "seq_len": stage.seq_len,
        }

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to the last step, checkpointing along the way, and export the model.

        Stops early (with a checkpoint, and an export) at step `stop_at` or before the time limit would pass.
        """
        start = time.perf_counter()
        total = self.config.total_steps
        until = min(total, stop_at) if stop_at is not None else total
        with (self.run_dir / METRICS_FILE).open("a") as log:
            while self.step < until:
                stage_index = stage_at(self.config.stages, self.step)
                stage = self._enter_stage(stage_index)
                t0 = time.perf_counter()
                metrics = self.train_step(stage)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                step_s = time.perf_counter() - t0
                self.step += 1
                metrics = {
                    "step": self.step,
                    "stage": stage_index,
                    **metrics,
                    "step_s": round(step_s, 4),
                    "tokens_per_s": round(metrics["tokens"] / step_s, 1),
                    "elapsed_s": round(time.perf_counter() - start, 2),
                    "data_index": self.packer.next_index if self.packer else 0,
                }
                log.write(json.dumps(metrics) + "\n")
                log.flush()
                if self.on_step is not None:
                    self.on_step(metrics)
                stage_end = self.step == sum(s.steps for s in self.config.stages[: stage_index + 1])
                out_of_time = self.time_limit_s is not None and time.perf_counter() - start + step_s > self.time_limit_s
                if self.step % self.checkpoint_every == 0 or stage_end or out_of_time or self.step == until:
                    self.save()
                if out_of_time:
                    break
        stopped_early = self.step < total
        self.stream.close()
        exported = self.export()  # also after a time-limit stop: a shorter run still leaves a usable model
        return {
            "steps": self.step,
            "total_steps": total,
            "stopped_early": stopped_early,
            "wall_s": round(time.perf_counter() - start, 1),
            "exported": str(exported),
        }
