"""What changes over a run: the learning rate (linear warm-up, cosine decay) and the context-length stages."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmx.errors import MmxError
from mmx.sizes import format_size, parse_size


@dataclass(frozen=True)
class WarmupCosine:
    """Learning rate as a pure function of the step, so resuming needs only the step number."""

    peak: float
    total_steps: int
    warmup_steps: int
    min_ratio: float = 0.1  # the rate ends at peak * min_ratio rather than 0: the last steps still learn

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class Stage:
    """A span of steps at one row length; `rope_theta` (optional) changes the softmax layers' RoPE base from here on."""

    seq_len: int
    steps: int
    rope_theta: float | None = None

    def __str__(self) -> str:
        theta = f":{self.rope_theta:g}" if self.rope_theta is not None else ""
        return f"{format_size(self.seq_len)}:{self.steps}{theta}"


def parse_stages(text: str) -> list[Stage]:
    """`'4k:600,16k:200:5e7'` -> stages of (row length, steps[, new RoPE base]), run in order."""
    hint = "write stages as LEN:STEPS[:ROPE_THETA], comma-separated, e.g. 4k:600,16k:200:5e7"
    stages = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        fields = part.split(":")
        if len(fields) not in (2, 3):
            raise MmxError(f"bad stage {part!r}", hint)
        seq_len = parse_size(fields[0])
        try:
            steps = int(fields[1])
            theta = float(fields[2]) if len(fields) == 3 else None
        except ValueError:
            raise MmxError(f"bad stage {part!r}", hint) from None
        if steps <= 0 or (theta is not None and not (theta > 0 and math.isfinite(theta))):
            raise MmxError(f"bad stage {part!r}: steps and RoPE base must be positive", hint)
        stages.append(Stage(seq_len, steps, theta))
    if not stages:
        raise MmxError("no training stages given", hint)
    return stages


def stage_at(stages: list[Stage], step: int) -> int:
    """Index of the stage that global step `step` belongs to (the last one past the end)."""
    end = 0
    for i, stage in enumerate(stages):
        end += stage.steps
        if step < end:
            return i
    return len(stages) - 1
