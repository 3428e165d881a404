"""Training checkpoints: everything an exact resume needs, written to a temporary folder and swapped in at once.

A checkpoint directory is also a model directory (`config.json` + `model.safetensors`, fp32 master weights), so
`mmx:RUN/checkpoint` evaluates a run in progress. `trainer.pt` adds the optimizer, the step, the packer's data
position and the random-number generators.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

TRAINER_FILE = "trainer.pt"


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
    torch.save({**trainer_state, "rng": rng_state()}, tmp / TRAINER_FILE)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def load_trainer_state(directory: Path, device: torch.device) -> dict[str, Any]:
    """The trainer half of a checkpoint (the model half loads through `MiniMaxForCausalLM.from_pretrained`)."""
    return torch.load(directory / TRAINER_FILE, map_location=device, weights_only=False)


def find_checkpoint(run_dir: Path, name: str) -> Path | None:
    """The checkpoint to resume from; a crash between the two renames of `save_checkpoint` leaves it at `.old`."""
    for candidate in (run_dir / name, run_dir / f"{name}.old"):
        if (candidate / TRAINER_FILE).exists():
            return candidate
    return None
