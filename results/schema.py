"""The shapes of the files in a run directory, as pydantic models: `run.json`, a `samples.jsonl` record and a
`bench.jsonl` record.

They check what mmx relies on when it resumes a run or reports on it, and let everything else through (extra fields
are kept), so a run written by an older or newer mmx still loads. A `run.json` that fails is one error naming the
field; a JSONL record that fails is reported and its sample or measurement runs again, as a torn line is.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
Text = Annotated[str, Field(strict=True, min_length=1)]


class _Open(BaseModel):
    """A record that keeps fields it does not know (newer writers, per-task extras)."""

    model_config = ConfigDict(extra="allow")


class RunParams(_Open):
    """The parameters reports read back (tasks, lengths, samples per cell, seed); each kind adds its own."""

    tasks: list[Text] | Text | None = None
    lengths: list[PositiveInt | Text] | Text | None = None
    samples: NonNegativeInt | None = None
    seed: int | None = Field(default=None, strict=True)
    model: dict[str, Any] | str | None = None  # eval: the pinned model description; bench: the --model string


class RunMeta(_Open):
    """`run.json`: what ran, on what, with which code. `run_id` is the run's identity, stamped on every record."""

    kind: Text = "eval"
    command: list[Any] | str | None = None
    suite: str | None = None
    model: dict[str, Any] = Field(default_factory=dict)
    params: RunParams = Field(default_factory=RunParams)
    run_id: Text | None = None


class SampleRecord(_Open):
    """One scored sample of an eval sweep: identified by (task, length, index) within its run."""

    task: Text
    length: PositiveInt
    index: NonNegativeInt
    status: Text = "ok"
    score: float | None = Field(default=None, strict=True)
    prediction: str | None = None
    references: list[Any] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)
    run_id: Text | None = None

    @field_validator("score")
    @classmethod
    def _fraction(cls, score: float | None) -> float | None:
        if score is not None and not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise ValueError("a score between 0 and 1")
        return score


class DocumentRecord(SampleRecord):
    """One scored lm-eval document: as a sample, but with no target length (`length` is None)."""

    length: PositiveInt | None = None


class BenchRecord(_Open):
    """One throughput measurement: which bench, which subject, which length."""

    bench: Text
    length: PositiveInt
    status: Text = "ok"
    batch_size: PositiveInt | None = None
    run_id: Text | None = None


class LmEvalResults(RootModel[dict[str, dict[str, Any]]]):
    """`lm_eval_results.json`: lm-eval's metrics per task (`{"task": {"acc,none": 0.5, ...}}`)."""
