"""Checkpoint IO: sharded safetensors in the original MiniMax-Text-01 layout or the transformers-native (`-hf`) one.

Loading builds the model on the meta device (no random weights are ever allocated), memory-maps the shards, converts
names and fused expert tensors to the native layout, checks every key and shape against the config, and assigns the
tensors in place: a CPU load in the stored dtype copies nothing, any other load copies each tensor once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mmx.errors import MmxError
from mmx.files import atomic_write, read_json, validated
from mmx.model.config import MiniMaxConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# transformers-native (-hf) name                   -> native (original) name
HF_RENAMES: dict[str, str] = {
    "model.layers.{i}.mlp.gate.weight": "model.layers.{i}.block_sparse_moe.gate.weight",
    "model.layers.{i}.mlp.experts.{e}.{w}.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight",
}
# fused -hf expert tensors [E, rows, cols]         -> per expert e, native weights stacked along rows
HF_FUSED_EXPERTS: dict[str, tuple[str, ...]] = {
    "model.layers.{i}.mlp.experts.gate_up_proj": ("w1", "w3"),  # [E, 2I, h]: w1 = rows [0, I), w3 = rows [I, 2I)
    "model.layers.{i}.mlp.experts.down_proj": ("w2",),  # [E, h, I]
}
# Decay tables the -hf port stores as buffers; they carry no weights and are recomputed from the config.
DROPPED = re.compile(r"model\.layers\.\d+\.self_attn\.(slope_rate|query_decay|key_decay|diagonal_decay)")


def _pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{e\}", r"(?P<e>\d+)")
    return re.compile(body.replace(r"\{w\}", r"(?P<w>w[123])"))


_MISMATCH_HINT = "the weights do not match config.json (wrong config, or a different model's checkpoint)"
_RENAMES = [(_pattern(hf), native) for hf, native in HF_RENAMES.items()]
_FUSED = [(_pattern(hf), parts) for hf, parts in HF_FUSED_EXPERTS.items()]


class _Index(BaseModel):
    """`model.safetensors.index.json`: which shard holds each tensor."""

    weight_map: dict[str, Annotated[str, Field(strict=True, min_length=1)]]


class _Shards:
    """Memory-mapped view of a checkpoint directory's safetensors files: key -> lazily loaded CPU tensor."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open: dict[str, Any] = {}
        index = directory / INDEX_FILE
        if index.is_file():
            hint = "restore it from the checkpoint"
            weight_map = validated(_Index, read_json(index, hint), str(index), hint).weight_map
        elif (directory / SINGLE_FILE).is_file():
            weight_map = dict.fromkeys(self._handle(SINGLE_FILE).keys(), SINGLE_FILE)
        else:
            raise MmxError(f"no {INDEX_FILE} or {SINGLE_FILE} in {directory}", "point at a safetensors checkpoint")
        for name in sorted(set(weight_map.values())):
            if not (directory / name).is_file():
                raise MmxError(f"checkpoint shard {name} is missing from {directory}", f"{INDEX_FILE} lists it")
        self.weight_map = weight_map

    def _handle(self, name: str) -> Any:
        if name not in self._open:
            try:
                self._open[name] = safe_open(self.directory / name, framework="pt", device="cpu")
            except SafetensorError as err:
                raise MmxError(f"checkpoint shard {name} is unreadable ({err})", "download it again") from err
        return self._open[name]

    def slice(self, key: str) -> Any:
        """A lazy view of `key` (safetensors' `get_slice`): indexing it reads only the rows asked for."""
        name = self.weight_map[key]
        try:
            return self._handle(name).get_slice(key)
        except SafetensorError as err:
            raise MmxError(f"{key} cannot be read from {name} ({err})", f"{INDEX_FILE} and the shard disagree") from err

    def get(self, key: str) -> torch.Tensor:
        name = self.weight_map[key]
        try:
            return self._handle(name).get_tensor(key)
        except SafetensorError as err:
            raise MmxError(f"{key} cannot be read from {name} ({err})", f"{INDEX_FILE} and the shard disagree") from err


def _native_tensors(
    shards: _Shards, expected: dict[str, tuple[int, ...]], n_experts: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """(native key, CPU tensor) for every weight in the checkpoint, whichever layout it uses."""
    for key in shards.weight_map:
        if DROPPED.fullmatch(key):
            continue
        yield from _split_fused(key, shards, expected, n_experts) or [(_rename(key), shards.get(key))]


def native_name(key: str) -> str:
    """The native (original-layout) name of checkpoint key `key`: -hf names renamed, others as they are."""
    return _rename(key)


def fused_experts(key: str) -> tuple[str, tuple[str, ...]] | None:
    """For a fused -hf expert tensor: (the native prefix `model.layers.{i}.block_sparse_moe.experts`, the native
    weights stacked along its rows, e.g. ("w1", "w3")); None for any other key."""
    for pattern, parts in _FUSED:
        match = pattern.fullmatch(key)
        if match:
            return f"model.layers.{match['i']}.block_sparse_moe.experts", parts
    return None


def _rename(key: str) -> str:
    for pattern, native in _RENAMES:
        match = pattern.fullmatch(key)
        if match:
            return native.format(**match.groupdict())
    return key


def _split_fused(
    key: str, shards: _Shards, expected: dict[str, tuple[int, ...]], n_experts: int
) -> list[tuple[str, torch.Tensor]] | None:
    """Per-expert views of a fused -hf expert tensor, or None when `key` is not one."""
    for pattern, parts in _FUSED:
        match = pattern.fullmatch(key)
        if not match:
            continue
        prefix = f"model.layers.{match['i']}.block_sparse_moe.experts"
        if f"{prefix}.0.{parts[0]}.weight" not in expected:
            raise MmxError(f"unexpected key {key} in checkpoint {shards.directory}", _MISMATCH_HINT)
        rows, cols = expected[f"{prefix}.0.{parts[0]}.weight"]
        tensor = shards.get(key)
        want = (n_experts, len(parts) * rows, cols)
        if tuple(tensor.shape) != want:
            raise MmxError(f"{key} has shape {list(tensor.shape)}, the config needs {list(want)}", _MISMATCH_HINT)
        return [
            (f"{prefix}.{e}.{part}.weight", chunk)  # [rows, cols] view
            for e in range(n_experts)
            for part, chunk in zip(parts, tensor[e].split(rows), strict=True)
        ]
    return None


def default_device_dtype(
    device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """The project's precision rule: bf16 weights on CUDA, fp32 on the CPU, unless asked otherwise."""
    resolved = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if dtype is None:
        dtype = torch.bfloat16 if resolved.type == "cuda" else torch.float32
    return resolved, dtype


def read_state(
    directory: Path, expected: dict[str, tuple[int, ...]], num_experts: int, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The native state dict in `directory`'s safetensors (original or `-hf` layout), each tensor on `device` in
    `dtype`; its keys and shapes must be exactly `expected` (a model's `state_dict` shapes, e.g. built on `meta`)."""
    shards = _Shards(directory)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in _native_tensors(shards, expected, num_experts):
        if key not in expected:
            raise MmxError(f"unexpected key {key} in checkpoint {directory}", _MISMATCH_HINT)
        if tuple(tensor.shape) != expected[key]:
            raise MmxError(
                f"{key} has shape {list(tensor.shape)}, the config needs {list(expected[key])}", _MISMATCH_HINT
            )
        state[key] = tensor.to(device=device, dtype=dtype)
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MmxError(f"checkpoint {directory} is missing {missing[0]}{more}", "the checkpoint is incomplete")
    return state


def write_checkpoint(
    state: dict[str, torch.Tensor], config: MiniMaxConfig, directory: str | Path, max_shard_bytes: int = 5 * 2**30
) -> None:
    """Write config.json and safetensors in the original key layout: one file, or shards plus an index. Each file is
    written under a temporary name and renamed, so a failed write (a full disk) never leaves a torn file, and the
    config is written last: a directory with a config.json holds the weights it describes."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MmxError(f"cannot create {directory}: {err.strerror}", "choose another directory") from None
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.detach().contiguous().cpu()
        size += nbytes
    if len(shards) == 1:
        _save_shard(shards[0], directory / SINGLE_FILE)
    else:
        weight_map = {}
        for n, shard in enumerate(shards, start=1):
            name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
            _save_shard(shard, directory / name)
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        atomic_write(directory / INDEX_FILE, json.dumps(index, indent=2) + "\n")
    described = {"model_type": "minimax_text_01", **config.to_dict()}
    atomic_write(directory / "config.json", json.dumps(described, indent=2) + "\n")


def _save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors written beside `path` under a temporary name, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        tmp.replace(path)
    except (OSError, SafetensorError) as err:
        tmp.unlink(missing_ok=True)
        why = err.strerror if isinstance(err, OSError) else str(err)
        raise MmxError(f"cannot write {path}: {why}", "free some disk space, or choose another directory") from None
