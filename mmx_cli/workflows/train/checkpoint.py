"""Training checkpoints: everything an exact resume needs, written to a temporary folder and swapped in at once.

A checkpoint directory is also a model directory (`config.json` + `model.safetensors`, fp32 master weights), so
`mmx:RUN/checkpoint` evaluates a run in progress. `trainer.pt` adds the optimizer, the step, the packer's data
position and the random-number generators.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mmx.errors import MmxError
from mmx.files import validated, write_hint

TRAINER_FILE = "trainer.pt"
_STATE_HINT = "the checkpoint is damaged; restore it, or start the training again in a new --out directory"
_Count = Annotated[int, Field(strict=True, ge=0)]


class PackerState(BaseModel):
    """Where the packer was in the document stream: its row length, the next unread document, those waiting."""

    seq_len: Annotated[int, Field(strict=True, gt=0)]
    next_index: _Count
    waiting: list[_Count] | None = None


class TrainerState(BaseModel):
    """`trainer.pt`: everything but the weights that an exact resume needs."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    step: _Count
    optimizer: dict[str, Any]
    packer: PackerState
    rng: dict[str, Any]
    config: dict[str, Any]


def rng_state() -> dict[str, Any]:
    """Every generator training might draw from (none does today; a resume must stay exact if one starts to)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, model: torch.nn.Module, trainer_state: dict[str, Any]) -> None:
    """Write model + trainer state to `directory`, replacing an older checkpoint only once the new one is whole."""
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    try:
        torch.save({**trainer_state, "rng": rng_state()}, tmp / TRAINER_FILE)
    except OSError as err:
        raise MmxError(f"cannot write {tmp / TRAINER_FILE}: {err.strerror}", write_hint(err, "check --out")) from None
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def load_trainer_state(directory: Path, device: torch.device) -> dict[str, Any]:
    """The trainer half of a checkpoint (the model half loads through `MiniMaxForCausalLM.from_pretrained`), checked:
    a file torch cannot read, or one without the step, optimizer, data position and generators, is one MmxError."""
    path = directory / TRAINER_FILE
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # unpickling a damaged file fails in many ways (zip, pickle, missing classes)
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise MmxError(f"{path} cannot be read ({reason})", _STATE_HINT) from None
    validated(TrainerState, state, str(path), _STATE_HINT)
    return state


def find_checkpoint(run_dir: Path, name: str) -> Path | None:
    """The checkpoint to resume from; a crash between the two renames of `save_checkpoint` leaves it at `.old`."""
    for candidate in (run_dir / name, run_dir / f"{name}.old"):
        if (candidate / TRAINER_FILE).exists():
            return candidate
    return None
