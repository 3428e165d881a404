"""What `mmx bench throughput` times: our MiniMaxForCausalLM and transformers' causal LMs behind one small interface.

A `Subject` is a description (cheap: config, labels, what `run.json` records) plus a `build` that loads the model
only when its turn comes, so a sweep over several architectures, or ours against transformers' on a 25B-parameter
slice, holds one model in memory at a time. A `Runner` is the loaded model: prefill a prompt into a one-row cache,
copy that cache into B rows, and take greedy decode steps.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mmx.errors import MmxError
from mmx.model.backends.common import dtype_name
from mmx.model.backends.native import parse_random_spec
from mmx.model.chunk_attention import DEFAULT_PREFILL_PATH, prefill_path
from mmx.model.config import LIGHTNING, SOFTMAX, MiniMaxConfig
from mmx.model.generate import measured_chunk
from mmx.model.parallel.layout import ShardLayout
from mmx.model.parallel.runtime import ParallelContext

ARCHS = ("hybrid", "softmax", "lightning")
HF_BLOCK_SIZE = 256  # transformers' lightning attention block (its config default, MiniMax-Text-01's value)


class Runner(Protocol):
    """A loaded model the harness times. Caches are opaque to the harness."""

    details: dict[str, Any]  # how it runs (kernel paths, chunking), copied into every record
    chunk_size: int | None  # prefill chunk, or None for one forward over the whole prompt

    def prefill(self, input_ids: torch.Tensor) -> Any:
        """Feed input_ids [1, T] and return the cache after them (logits for the last position are computed)."""
        ...

    def expand(self, cache: Any, batch_size: int, extra_tokens: int) -> Any:
        """A `batch_size`-row copy of a one-row cache with room for `extra_tokens` more per row."""
        ...

    def decode(self, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        """One greedy step: tokens [B] -> next tokens [B]; the cache advances by one."""
        ...


@dataclass
class Subject:
    """One curve family of a run: a model, how it runs, and how to load it when its turn comes."""

    label: str  # the series name in records and reports, e.g. "mmx hybrid", "transformers hybrid"
    family: str  # the model without implementation or layout, e.g. "minimax-text-01 ×4 layers": names the run
    arch: str | None  # hybrid / softmax / lightning for MiniMax models
    config: MiniMaxConfig | None  # what FLOPs and bytes are counted from (None: not a MiniMax model)
    vocab_size: int
    max_context: int | None
    info: dict[str, Any]  # recorded in run.json: spec, weights, config, dtype, device
    build: Callable[[], Runner] = field(repr=False)


# ---------------------------------------------------------------------------------------------- architecture variants


def hybrid_period(config: MiniMaxConfig) -> int:
    """Layers per softmax layer in the config's layout (8 for MiniMax-Text-01's 7:1); all-lightning counts as 8."""
    soft = config.softmax_layers
    return soft[0] + 1 if soft else 8


def attn_layout(arch: str, layers: int, period: int) -> list[int]:
    """attn_type_list of an architecture: every `period`-th layer softmax for hybrid (the last one when fewer layers
    than a period, so a slice keeps one), all softmax, or all lightning."""
    if arch == "softmax":
        return [SOFTMAX] * layers
    if arch == "lightning":
        return [LIGHTNING] * layers
    layout = [SOFTMAX if (i + 1) % period == 0 else LIGHTNING for i in range(layers)]
    if SOFTMAX not in layout:
        layout[-1] = SOFTMAX
    return layout


def reshape(config: MiniMaxConfig, layers: int | None, arch: str) -> MiniMaxConfig:
    """The config with `layers` layers (default: its own) laid out as `arch`; everything else unchanged."""
    if arch not in ARCHS:
        raise MmxError(f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHS)}")
    n = layers or config.num_hidden_layers
    if n > config.num_hidden_layers:
        raise MmxError(
            f"--layers {n} is more than the preset's {config.num_hidden_layers} layers",
            f"--layers keeps a slice: pass at most {config.num_hidden_layers}",
        )
    if arch == "hybrid" and n == config.num_hidden_layers:
        return dataclasses.replace(config)
    return dataclasses.replace(config, num_hidden_layers=n, attn_type_list=attn_layout(arch, n, hybrid_period(config)))


def transformers_config(config: MiniMaxConfig) -> Any:
    """transformers' MiniMaxConfig for the same architecture (its -hf field names), SDPA attention."""
    from transformers import MiniMaxConfig as HFMiniMaxConfig

    kinds = {LIGHTNING: "linear_attention", SOFTMAX: "full_attention"}
    hf = HFMiniMaxConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        num_local_experts=config.num_local_experts,
        num_experts_per_tok=config.num_experts_per_tok,
        layer_types=[kinds[t] for t in config.attn_type_list],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": config.rope_theta,
            "partial_rotary_factor": config.rotary_dim / config.head_dim,
        },
        block_size=HF_BLOCK_SIZE,
        full_attn_alpha_factor=config.layernorm_full_attention_alpha,
        full_attn_beta_factor=config.layernorm_full_attention_beta,
        linear_attn_alpha_factor=config.layernorm_linear_attention_alpha,
        linear_attn_beta_factor=config.layernorm_linear_attention_beta,
        mlp_alpha_factor=config.layernorm_mlp_alpha,
        mlp_beta_factor=config.layernorm_mlp_beta,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        tie_word_embeddings=False,
    )
    hf._attn_implementation = "sdpa"
    return hf


# ------------------------------------------------------------------------------------------------- random weights


@torch.no_grad()
def init_random(model: torch.nn.Module, std: float, seed: int) -> None:
    """normal(0, std) matrices and unit norms, drawn on the model's own device: seconds for a 25B-parameter slice
    where drawing on the CPU would take minutes. Speed does not depend on the values, but routing does depend on
    them being random rather than uninitialised, so both implementations get the same rule."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=generator)


def build_native(
    config: MiniMaxConfig, device: torch.device, dtype: torch.dtype, seed: int, place: Placement | None = None
) -> Any:
    """Our model with random weights, allocated once in `dtype` on `device` (built on the meta device first); under
    tensor parallelism or with 8-bit experts (`place`), only this rank's part, drawn on its device."""
    from mmx.model.modeling import MiniMaxForCausalLM
    from mmx.model.parallel.build import random_sharded

    if place is not None and place.sharded:
        group = place.context.tp_group if place.context is not None else None
        return random_sharded(place.layout(config), group, device, dtype, seed, place.quantize, exact=False)
    with torch.device("meta"):
        model = MiniMaxForCausalLM(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    init_random(model, config.initializer_range, seed)
    return model.eval().pack_experts()  # as the native backend runs it: MoE routing without host syncs


def build_transformers(config: MiniMaxConfig, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    """transformers' MiniMaxForCausalLM for the same config, random weights drawn by the same rule as ours."""
    try:
        from transformers import MiniMaxForCausalLM as HFMiniMaxForCausalLM
    except ImportError:
        raise MmxError("--compare-transformers needs transformers", "pip install 'mmx[hf]'") from None
    with torch.device(device):
        model = HFMiniMaxForCausalLM._from_config(transformers_config(config), dtype=dtype)
    init_random(model, config.initializer_range, seed)
    return model.eval()


def parameter_count(config: MiniMaxConfig) -> int:
    """Parameters of our model for `config`, counted on the meta device (free for any size)."""
    from mmx.model.modeling import MiniMaxForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in MiniMaxForCausalLM(config).parameters())


# ------------------------------------------------------------------------------------------------------- runners


class NativeRunner:
    """Our model: chunked prefill into a ModelCache (activations bounded by one chunk), batched decode in fixed-shape
    steps (`FixedDecoder`: on CUDA the first step is captured as a graph and the others replay it).

    `prefill_attention` is the softmax-attention path of every chunk after the first (`mmx.model.chunk_attention`).
    """

    def __init__(
        self,
        model: Any,
        chunk_size: int | None,
        prefill_attention: str = DEFAULT_PREFILL_PATH,
        parallel: dict[str, Any] | None = None,
    ) -> None:
        from mmx.kernels.dispatch import auto_impl

        self.model = model
        self.chunk_size = chunk_size or measured_chunk(model)[0]  # None: as the native backend sizes it
        self.prefill_attention = prefill_attention
        self.details = {
            "chunk_size": self.chunk_size,
            "lightning": auto_impl(model.device),
            "prefill_attention": prefill_attention,
            "decode": "cuda graph" if model.device.type == "cuda" else "eager",
            **(parallel or {}),  # tensor_parallel, data_parallel, quantized_experts of a sharded or launched run
        }

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor) -> Any:
        from mmx.model.generate import prefill

        cache = self.model.new_cache(1)
        with prefill_path(self.prefill_attention):
            prefill(self.model, input_ids, cache, self.chunk_size)
        return cache

    @torch.inference_mode()
    def expand(self, cache: Any, batch_size: int, extra_tokens: int) -> Any:
        from mmx.model.generate import FixedDecoder

        rows = self.model.new_cache(batch_size)
        rows.reserve(cache.lengths[0] + extra_tokens)
        for row in range(batch_size):
            rows.load_row(row, cache)
        return FixedDecoder(self.model, rows)  # as `generate` decodes: replayed from a CUDA graph on a GPU

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        return cache(tokens)


class TransformersRunner:
    """A transformers causal LM the way its users run it: one forward of the whole prompt, then its own cache."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.chunk_size = None
        self.keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        config = model.config
        self.details = {
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "experts_implementation": getattr(config, "_experts_implementation", None),
        }

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor) -> Any:
        extra = {"logits_to_keep": 1} if self.keep_last else {}
        return self.model(input_ids=input_ids, use_cache=True, **extra).past_key_values

    @torch.inference_mode()
    def expand(self, cache: Any, batch_size: int, extra_tokens: int) -> Any:
        from transformers.cache_utils import Cache

        rows = copy.deepcopy(cache)
        if batch_size == 1:
            return rows
        # The base Cache method repeats each layer's K/V; MiniMaxCache keeps lightning states beside them, and its
        # own override (transformers 5.17) indexes those per layer, which fails when the model has none.
        Cache.batch_repeat_interleave(rows, batch_size)
        states = getattr(rows, "linear_cache", None)
        if states:
            rows.linear_cache = [
                s.repeat_interleave(batch_size, dim=0) if isinstance(s, torch.Tensor) else s for s in states
            ]
        return rows

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.model(input_ids=tokens[:, None], past_key_values=cache, use_cache=True)
        return out.logits[:, -1].argmax(dim=-1)


# ------------------------------------------------------------------------------------------------ from a spec


@dataclass(frozen=True)
class Placement:
    """Where and how the models run: device, dtype, prefill chunk, and (ours) tensor parallel and 8-bit experts."""

    device: torch.device
    dtype: torch.dtype
    chunk_size: int | None  # prefill chunk of our model; None: measured once the model is loaded (`measured_chunk`)
    tp: int = 1
    quantize: str | None = None
    context: ParallelContext | None = None  # the torchrun job, when launched

    @property
    def chunk_text(self) -> int | str:
        """The chunk as run.json records it before any model is loaded (records carry the measured one)."""
        return self.chunk_size or "auto"

    @property
    def sharded(self) -> bool:
        return self.tp > 1 or self.quantize is not None

    def layout(self, config: MiniMaxConfig) -> ShardLayout:
        return ShardLayout(config, self.context.tp_rank if self.context is not None else 0, self.tp)

    @property
    def parallel(self) -> dict[str, Any]:
        """What every record of our models says about the split (nothing for a plain single-device run)."""
        info: dict[str, Any] = {}
        if self.context is not None and self.context.distributed:
            info |= {"tensor_parallel": self.tp, "data_parallel": self.context.dp}
        if self.quantize:
            info["quantized_experts"] = self.quantize
        return info

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)


def _native_build(config: MiniMaxConfig, place: Placement, seed: int, path: str) -> Callable[[], Runner]:
    def build() -> Runner:
        model = build_native(config, place.device, place.dtype, seed, place)
        return NativeRunner(model, place.chunk_size, path, place.parallel)

    return build


def _transformers_build(config: MiniMaxConfig, place: Placement, seed: int) -> Callable[[], Runner]:
    return lambda: TransformersRunner(build_transformers(config, place.device, place.dtype, seed))


def _path_label(label: str, path: str, paths: list[str]) -> str:
    """A series name that says the prefill attention path when a run compares several."""
    return f"{label} {path}" if len(paths) > 1 else label


def random_subjects(
    spec: str,
    place: Placement,
    *,
    layers: int | None,
    archs: list[str],
    compare_transformers: bool,
    paths: list[str],
) -> list[Subject]:
    """`random:PRESET[:SEED]`: per architecture, ours once per prefill attention path in `paths`, then
    transformers' on the same config."""
    preset, seed = parse_random_spec(spec.partition(":")[2])
    base = MiniMaxConfig.from_name(preset)
    subjects = []
    for arch in archs:
        config = reshape(base, layers, arch)
        family = f"{preset} ×{config.num_hidden_layers} layers"
        info = {
            "spec": spec,
            "preset": preset,
            "seed": seed,
            "random_weights": True,
            "layers": config.num_hidden_layers,
            "arch": arch,
            "config": config.to_dict(),
            "parameters": parameter_count(config),
            "dtype": place.dtype_name,
            "device": str(place.device),
            "init": "normal(0, initializer_range) drawn on the device from the seed",
        }
        ours = {"name": f"{family} {arch} (mmx)", "backend": "native", "chunk_size": place.chunk_text}
        ours |= place.parallel
        impls = [
            (
                _path_label(f"mmx {arch}", path, paths),
                ours | {"prefill_attention": path},
                _native_build(config, place, seed, path),
            )
            for path in paths
        ]
        if compare_transformers:
            theirs = {"name": f"{family} {arch} (transformers)", "backend": "transformers"}
            impls.append((f"transformers {arch}", theirs, _transformers_build(config, place, seed)))
        for label, described, build in impls:
            subjects.append(
                Subject(
                    label=label,
                    family=family,
                    arch=arch,
                    config=config,
                    vocab_size=config.vocab_size,
                    max_context=config.max_position_embeddings,
                    info={**info, **described},
                    build=build,
                )
            )
    return subjects


def backend_subjects(spec: str, place: Placement, paths: list[str]) -> list[Subject]:
    """A checkpoint (`mmx-mini`, `mmx:PATH`) or `hf:` model, loaded now through the backend registry: ours once per
    prefill attention path in `paths`, another model once."""
    from mmx.model.backends.base import load_backend

    sharding = {"tp": place.tp if place.tp > 1 else None, "quantize_experts": place.quantize}
    options = {key: value for key, value in sharding.items() if value is not None}
    backend: Any = load_backend(spec, device=_device_option(place), dtype=place.dtype_name, **options)
    model = getattr(backend, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise MmxError(
            f"{spec!r} is not a model mmx can time in-process", "bench a local model: NAME, mmx:, random:, hf:"
        )
    info = backend.describe()
    name = str(info.get("name") or spec)
    config = getattr(model, "config", None)
    if isinstance(config, MiniMaxConfig):
        chunk = place.chunk_size or backend.prefill_chunk
        runners: list[tuple[str, dict[str, Any], Runner]] = [
            (
                _path_label(name, path, paths),
                {"chunk_size": chunk, "prefill_attention": path},
                NativeRunner(model, chunk, path, place.parallel),
            )
            for path in paths
        ]
    else:
        runners, config = [(name, {}, TransformersRunner(model))], None
    return [
        Subject(
            label=label,
            family=name,
            arch=None,
            config=config,
            vocab_size=int(model.config.vocab_size),
            max_context=getattr(backend, "max_context", None),
            info={**info, **extra},
            build=lambda runner=runner: runner,
        )
        for label, extra, runner in runners
    ]


def _device_option(place: Placement) -> str:
    """The --device a backend loads with: in a torchrun job the kind only (each rank takes its own GPU)."""
    if place.context is not None and place.context.distributed:
        return place.device.type
    return str(place.device)
