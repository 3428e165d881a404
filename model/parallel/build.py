"""One rank's part of the model, built without ever holding the whole: from a checkpoint, or from random weights.

The model is built on the meta device, cut to the rank's share (`tp.shard_model`), its experts swapped for 8-bit
layers when asked (`quant`), and only then allocated on the rank's device. A checkpoint is read through memory-mapped
safetensors slices (`get_slice`): each rank reads exactly its rows, columns and experts, in the original or the -hf
layout, and 8-bit experts are quantized one tensor at a time as they arrive. Every global key and shape is checked
against the config, as the single-process loader does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed import ProcessGroup

from mmx.errors import MmxError
from mmx.model.checkpoint import DROPPED, _Shards, fused_experts, native_name
from mmx.model.config import MiniMaxConfig
from mmx.model.modeling import MiniMaxForCausalLM
from mmx.model.parallel.layout import ShardLayout
from mmx.model.parallel.quant import QuantizedLinear, quantize_experts
from mmx.model.parallel.tp import shard_model

_MISMATCH_HINT = "the weights do not match config.json (wrong config, or a different model's checkpoint)"


def global_shapes(config: MiniMaxConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the unsharded model and its shape, in `init_weights` order (free: built on meta)."""
    with torch.device("meta"):
        return {name: tuple(p.shape) for name, p in MiniMaxForCausalLM(config).named_parameters()}


def empty_sharded(
    layout: ShardLayout, group: ProcessGroup | None, dtype: torch.dtype, quantize: str | None
) -> MiniMaxForCausalLM:
    """The rank's model on the meta device: cut to `layout`, in `dtype`, experts in 8 bits when `quantize` names a
    kind (after the dtype cast, which would otherwise convert fp8 buffers too)."""
    with torch.device("meta"):
        model = MiniMaxForCausalLM(layout.config).to(dtype)
    shard_model(model, layout, group)
    if quantize:
        quantize_experts(model, quantize)
    return model.eval()


def _assign(model: nn.Module, layout: ShardLayout, name: str, tensor: torch.Tensor) -> None:
    """Put this rank's part of global tensor `name` (the whole of it, or the slice `layout` names) into the model."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, QuantizedLinear):
        module.load_weight(tensor)
        return
    target = getattr(module, leaf)
    rows = tensor.shape[0]
    if rows != target.shape[0] and name in ("model.embed_tokens.weight", "lm_head.weight"):
        target.data[rows:].zero_()  # vocabulary padding of the last rank
    with torch.no_grad():
        target.data[:rows].copy_(tensor)


def _pieces(shards: _Shards, layout: ShardLayout, shapes: dict[str, tuple[int, ...]]) -> Iterator[tuple[str, Any]]:
    """(native name, this rank's tensor) for every checkpoint tensor the rank holds, read slice by slice."""
    for key in shards.weight_map:
        if DROPPED.fullmatch(key):
            continue
        fused = fused_experts(key)
        if fused is not None:
            yield from _fused_pieces(shards, key, fused, layout, shapes)
            continue
        name = native_name(key)
        if name not in shapes:
            raise MmxError(f"unexpected key {key} in checkpoint {shards.directory}", _MISMATCH_HINT)
        view = shards.slice(key)
        _check_shape(name, tuple(view.get_shape()), shapes[name])
        if not layout.holds(name):
            continue
        cut = layout.slice_of(name)
        if cut is None:
            yield name, view[:]
        else:
            dim, start, stop = cut
            yield name, view[start:stop] if dim == 0 else view[:, start:stop]


def _fused_pieces(
    shards: _Shards, key: str, fused: tuple[str, tuple[str, ...]], layout: ShardLayout, shapes: dict
) -> Iterator[tuple[str, torch.Tensor]]:
    """This rank's experts out of a fused -hf tensor [E, rows·parts, cols]."""
    prefix, parts = fused
    first = f"{prefix}.0.{parts[0]}.weight"
    if first not in shapes:
        raise MmxError(f"unexpected key {key} in checkpoint {shards.directory}", _MISMATCH_HINT)
    rows, cols = shapes[first]
    view = shards.slice(key)
    _check_shape(key, tuple(view.get_shape()), (layout.config.num_local_experts, len(parts) * rows, cols))
    for e in layout.experts:
        for n, part in enumerate(parts):
            yield f"{prefix}.{e}.{part}.weight", view[e : e + 1, n * rows : (n + 1) * rows][0]


def _check_shape(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if got != want:
        raise MmxError(f"{name} has shape {list(got)}, the config needs {list(want)}", _MISMATCH_HINT)


def load_sharded(
    directory: Path,
    layout: ShardLayout,
    group: ProcessGroup | None,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
) -> MiniMaxForCausalLM:
    """This rank's part of the checkpoint in `directory` (original or -hf layout), on `device` in `dtype`."""
    shapes = global_shapes(layout.config)
    model = empty_sharded(layout, group, dtype, quantize).to_empty(device=device)
    shards = _Shards(directory)
    loaded = set()
    for name, tensor in _pieces(shards, layout, shapes):
        _assign(model, layout, name, tensor.to(device=device, dtype=dtype))
        loaded.add(name)
    missing = [name for name in shapes if layout.holds(name) and name not in loaded]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MmxError(f"checkpoint {directory} is missing {missing[0]}{more}", "the checkpoint is incomplete")
    return model


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, device=generator.device).normal_(0.0, std, generator=generator)


def _exact_draws(layout: ShardLayout, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """This rank's part of what `init_weights(seed)` draws, tensor by tensor on the CPU, in its order."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, shape in global_shapes(layout.config).items():
        if name.endswith("norm.weight"):
            draw = torch.ones(shape)
        else:
            draw = _normal(shape, layout.config.initializer_range, generator)  # drawn even when dropped: in step
        if not layout.holds(name):
            continue
        cut = layout.slice_of(name)
        yield name, draw if cut is None else draw.narrow(cut[0], cut[1], cut[2] - cut[1])


def _local_draws(layout: ShardLayout, seed: int, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """Only this rank's part, drawn on `device`: its slices from (seed, rank), what every rank holds whole (the
    routers) from the seed alone, so replicated weights agree across ranks."""
    own = torch.Generator(device=device).manual_seed(seed + 1 + layout.rank)
    shared = torch.Generator(device=device).manual_seed(seed)
    std = layout.config.initializer_range
    for name, shape in global_shapes(layout.config).items():
        if not layout.holds(name):
            continue
        cut = layout.slice_of(name)
        if cut is not None:
            dim, start, stop = cut
            shape = tuple(stop - start if d == dim else n for d, n in enumerate(shape))
        if name.endswith("norm.weight"):
            yield name, torch.ones(shape, device=device)
        else:
            yield name, _normal(shape, std, shared if cut is None and ".experts." not in name else own)


@torch.no_grad()
def random_sharded(
    layout: ShardLayout,
    group: ProcessGroup | None,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    quantize: str | None = None,
    exact: bool = True,
) -> MiniMaxForCausalLM:
    """This rank's part of a random model. `exact`: the very weights `init_weights(seed)` draws for one process,
    drawn on the CPU tensor by tensor (other ranks' parts are drawn and dropped, so the generator stays in step) —
    a sharded run then computes what a single-process one does. Otherwise each rank draws only its part, on its
    device: seconds for the full 456B model, whose exact draw would keep a CPU busy for an hour."""
    model = empty_sharded(layout, group, dtype, quantize).to_empty(device=device)
    draws = _exact_draws(layout, seed) if exact else _local_draws(layout, seed, device)
    for name, draw in draws:
        _assign(model, layout, name, draw.to(device=device, dtype=dtype))
    return model
