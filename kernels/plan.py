"""Launch plan for the Triton paths: how the token axis is cut into segments, and the block sizes.

A long sequence is cut into segments of `segment` rows so that many programs run at once: each segment's
local state is computed in parallel, a short sequential scan turns those into every segment's start state, and
then every segment produces its outputs in parallel, walking its blocks of `chunk` rows with the state held on
chip. Packed sequences (`cu_seqlens`) and batch rows are the same thing to the kernels: a list of sequences laid
end to end along the flattened token axis, none of whose segments crosses a boundary.

How long a segment is trades the three kernels against each other: short segments give many programs, but the scan
is a chain with one step per segment, a microsecond and a half each whatever its size. For inference (no gradients)
`forward_segment` picks the length with the least predicted time of the forward's three launches from per-block
costs measured on an H200; training keeps `choose_segment`'s rule, with which the backward kernels were tuned.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, replace

import torch

HEAD_DIMS = (16, 32, 64, 128)
FWD_FORMS = ("factored", "masked")
CONFIG_ENV = "MMX_KERNEL_CONFIG"  # JSON object of KernelConfig fields that replace the defaults for this process
_BLOCKS = ("chunk", "local_chunk", "bwd_chunk", "decode_block_v")  # tile sizes: powers of two (tl.arange needs it)
_WARPS = ("fwd_warps", "local_warps", "bwd_warps")


@dataclass(frozen=True)
class KernelConfig:
    """Block sizes and launch options; the defaults were tuned on an H200 (docs/benchmarks.md, the kernel sweep)."""

    chunk: int | None = None  # forward rows per block (intra products are chunk × chunk); None: see fwd_chunk
    segment: int | None = None  # rows per segment (a multiple of chunk); None sizes it to fill the device
    programs_per_sm: int = 4  # how many programs per multiprocessor the automatic segment size aims at
    max_segment: int = 16384  # longer segments save little state traffic but lose parallelism
    value_split: int = 1  # forward programs per head along the value dim (more programs, q/k read again)
    fwd_warps: int | None = None  # None: by the size of the state block a program holds in registers
    fwd_stages: int = 2
    fwd_form: str = "factored"  # outputs kernel: "factored" (decays folded into the operands) or "masked"
    local_chunk: int | None = None  # rows per block of the local-state kernel; None: see local_rows
    local_warps: int | None = None  # None: as fwd_warps
    local_stages: int | None = None  # None: see local_pipeline
    bwd_chunk: int = 64
    bwd_key_split: int = 1  # dq programs per head along the key dim (halves its two register states)
    bwd_warps: int | None = None
    bwd_stages: int = 2
    decode_block_v: int = 32  # value columns of the state per decode program

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and "None" in str(field.type):
                continue
            if field.name == "fwd_form":
                if value not in FWD_FORMS:
                    raise ValueError(f"fwd_form must be one of {', '.join(FWD_FORMS)}, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")
            elif field.name in _BLOCKS + _WARPS and value & (value - 1):
                raise ValueError(f"{field.name} must be a power of two, got {value}")
            elif field.name in _BLOCKS and value < 16:
                raise ValueError(f"{field.name} must be at least 16 (the smallest matrix-product tile), got {value}")

    def fwd_chunk(self, head_dim: int, dtype: torch.dtype) -> int:
        """Forward block rows: `chunk`, else 128 for bf16 at head dim 128 (20% faster on an H200 at 256k-4M tokens)
        and 64 otherwise (fp16/fp32 multiply the state in fp32, whose operand tile would not fit next to 128 rows)."""
        if self.chunk is not None:
            return self.chunk
        return 128 if dtype == torch.bfloat16 and head_dim >= 128 else 64

    def local_rows(self, head_dim: int, dtype: torch.dtype) -> int:
        """Block rows of the local-state kernel: `local_chunk`, else 64 for bf16 at head dim 128 (125 registers, so
        two programs share a multiprocessor: 15-17% faster than 128 rows on an H200 at 1M-4M tokens) and the forward
        block rows otherwise (the sweep measured only bf16 at head dim 128)."""
        if self.local_chunk is not None:
            return self.local_chunk
        return 64 if _measured_local(head_dim, dtype) else self.fwd_chunk(head_dim, dtype)

    def local_pipeline(self, head_dim: int, dtype: torch.dtype) -> int:
        """Pipeline stages of the local-state kernel: `local_stages`, else 3 where local_rows picks 64 (the pair
        the H200 sweep measured; 98,304 B of shared memory a program) and fwd_stages otherwise."""
        if self.local_stages is not None:
            return self.local_stages
        return 3 if _measured_local(head_dim, dtype) else self.fwd_stages

    def shrink(self, head_dim: int, dtype: torch.dtype, phase: str) -> KernelConfig | None:
        """The next smaller launch of `phase` ("fwd_local", "fwd_out", "bwd_…") to try when a kernel needs more
        shared memory than the GPU has: one pipeline stage first, then half the block rows (down to 16); None when
        nothing smaller is left."""
        if phase.startswith("bwd"):
            stages, chunk, n_stages, rows = "bwd_stages", "bwd_chunk", self.bwd_stages, self.bwd_chunk
        elif phase == "fwd_local":
            stages, chunk = "local_stages", "local_chunk"
            n_stages, rows = self.local_pipeline(head_dim, dtype), self.local_rows(head_dim, dtype)
        else:
            stages, chunk, n_stages, rows = "fwd_stages", "chunk", self.fwd_stages, self.fwd_chunk(head_dim, dtype)
        if n_stages > 1:
            return replace(self, **{stages: 1, chunk: rows})
        if rows > 16:
            return replace(self, **{chunk: rows // 2})
        return None

    @staticmethod
    def warps(chosen: int | None, state_elems: int) -> int:
        """`chosen`, or 4-8 warps, enough that a program's fp32 state blocks take about 64 registers per thread."""
        return chosen if chosen is not None else max(4, min(8, state_elems // (64 * 32)))

    @staticmethod
    def split(parts: int, dim: int) -> int:
        """How many parts `dim` really splits into: blocks of a matrix product need at least 16 columns."""
        return max(1, min(parts, dim // 16))

    def with_(self, **changes: object) -> KernelConfig:
        """A copy with some fields changed (used by the benchmark's tuning sweep)."""
        return replace(self, **changes)

    def changes(self) -> dict[str, object]:
        """The fields that differ from the built-in defaults, as CONFIG_ENV takes them."""
        base = KernelConfig()
        names = [f.name for f in dataclasses.fields(self)]
        return {name: getattr(self, name) for name in names if getattr(self, name) != getattr(base, name)}


def _measured_local(head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the local-state kernel's measured default (64 rows, 3 stages) applies: bf16 at head dim 128."""
    return dtype == torch.bfloat16 and head_dim >= 128


def config_from_json(text: str, source: str = CONFIG_ENV) -> KernelConfig:
    """The built-in defaults with the fields a JSON object sets ("" or "{}": the defaults themselves).

    This is how a tuning run hands its winner to `mmx bench kernels` or a model run without editing code:
    MMX_KERNEL_CONFIG='{"chunk": 64, "fwd_stages": 3}'. Raises ValueError naming `source` for anything else.
    """
    if not text.strip():
        return KernelConfig()
    try:
        changes = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(changes, dict):
        raise ValueError(f"{source} must be a JSON object of KernelConfig fields, got {text!r}")
    known = [f.name for f in dataclasses.fields(KernelConfig)]
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ValueError(f"{source} sets unknown fields {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return KernelConfig(**changes)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


DEFAULT_CONFIG = config_from_json(os.environ.get(CONFIG_ENV, ""))


@dataclass(frozen=True)
class SegmentPlan:
    """Segments over the flattened token axis, as int32 device tensors the kernels index by program id.

    seg_bos/seg_len: first row and length of each segment; seg_seq: its sequence; seq_ptr [N+1]: the segments of
    sequence n are seq_ptr[n] .. seq_ptr[n+1]-1, in order; local_segs: the segments followed by another of the same
    sequence. `multi` is True when some sequence has more than one
    segment, i.e. when the local-state and scan kernels have work to do.
    """

    seg_bos: torch.Tensor
    seg_len: torch.Tensor
    seg_seq: torch.Tensor
    seq_ptr: torch.Tensor
    local_segs: torch.Tensor  # segments that are not the last of their sequence: their local state is scanned
    n_seqs: int
    n_segments: int
    segment: int
    multi: bool
    empty_seqs: tuple[int, ...]  # sequences of length 0: their final state is their initial state


@functools.lru_cache(maxsize=16)
def sm_count(device: torch.device) -> int:
    """Multiprocessors on `device`; a small stand-in on the CPU (the interpreter) so segmenting is exercised."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


# Forward costs measured on an H200 (bf16, head dim 128: the kernel notes' 1M–4M forward sweep and bench), which
# `forward_segment` scales to other block shapes: microseconds per block of rows on one multiprocessor.
OUTPUTS_BLOCK_US = 6.3  # factored outputs walk, 128-row blocks, one program per multiprocessor (229,376 B shared)
LOCAL_BLOCK_US = 2.26  # local-state kernel, 64-row blocks, two programs per multiprocessor
SCAN_STEP_US = 1.4  # one segment of the scan chain: a state tile loaded, stored and decayed (0.09 ms / 64 at 1M)
LAUNCH_US = 5.0  # a kernel launch between two others on the device
MIN_BLOCK_US = 0.5  # no block is faster than a few loads' latency
FORWARD_MARGIN = 0.05  # a predicted gain smaller than this keeps the measured training plan
SHARED_BYTES = 232_448  # shared memory a Hopper multiprocessor gives its programs


@dataclass(frozen=True)
class ForwardCosts:
    """Per-block cost (µs) and programs per multiprocessor of the outputs and local-state kernels."""

    outputs_us: float
    outputs_per_sm: int
    local_us: float
    local_per_sm: int

    @classmethod
    def of(cls, head_dim: int, dtype: torch.dtype, config: KernelConfig) -> ForwardCosts:
        """Scaled from the measured kernels by the products a block does and the shared memory it holds."""
        rows, local_rows = config.fwd_chunk(head_dim, dtype), config.local_rows(head_dim, dtype)
        elem = torch.finfo(dtype).bits // 8
        # outputs block: Q K̃ᵀ and A V (rows² · D each), Q Gᵀ and the state update (rows · D² each)
        work = (rows * rows * head_dim + rows * head_dim * head_dim) / (2 * 128**3)
        shared = config.fwd_stages * 3 * rows * head_dim * elem + head_dim * head_dim * 4
        local_work = local_rows * head_dim * head_dim / (64 * 128 * 128)
        local_shared = config.local_pipeline(head_dim, dtype) * 2 * local_rows * head_dim * elem
        return cls(
            outputs_us=max(MIN_BLOCK_US, OUTPUTS_BLOCK_US * work),
            outputs_per_sm=max(1, min(4, SHARED_BYTES // shared)),
            local_us=max(MIN_BLOCK_US, LOCAL_BLOCK_US * local_work),
            local_per_sm=max(1, min(4, SHARED_BYTES // local_shared)),
        )


def forward_time_us(lengths: tuple[int, ...], heads: int, segment: int, n_sm: int, costs: ForwardCosts,
                    chunk: int, local_chunk: int, parts: int) -> float:  # fmt: skip
    """Predicted time of the forward's kernels for sequences of `lengths` cut into `segment`-row segments: each
    kernel takes as many rounds of programs as the multiprocessors hold, each round as long as one program's walk."""
    segments = [-(-n // segment) for n in lengths if n]
    programs = sum(segments) * heads * parts
    outputs = -(-programs // (n_sm * costs.outputs_per_sm)) * -(-min(segment, max(lengths)) // chunk)
    time = outputs * costs.outputs_us + LAUNCH_US
    if max(segments, default=0) > 1:
        local_programs = (sum(segments) - len(segments)) * heads * parts
        local = -(-local_programs // (n_sm * costs.local_per_sm)) * (segment // local_chunk)
        time += local * costs.local_us + max(segments) * SCAN_STEP_US + 2 * LAUNCH_US
    return time


def forward_segment(lengths: tuple[int, ...], heads: int, head_dim: int, dtype: torch.dtype, n_sm: int,
                    config: KernelConfig) -> int:  # fmt: skip
    """The segment length for a forward alone: the power-of-two multiple of the block rows (≤ max_segment, or one
    segment for the longest sequence) with the least predicted time (`forward_time_us`), where it beats the training
    rule (`choose_segment`, whose plans were measured) by more than FORWARD_MARGIN; that rule's length otherwise."""
    chunk = config.fwd_chunk(head_dim, dtype)
    tuned = choose_segment(sum(lengths), heads, chunk, n_sm, config)
    if config.segment is not None:
        return tuned
    costs = ForwardCosts.of(head_dim, dtype, config)
    parts = config.split(config.value_split, head_dim)
    local_chunk = config.local_rows(head_dim, dtype)
    predict = lambda seg: forward_time_us(lengths, heads, seg, n_sm, costs, chunk, local_chunk, parts)  # noqa: E731
    longest = max(max(lengths, default=1), 1)
    best, best_time = tuned, predict(tuned) * (1 - FORWARD_MARGIN)
    segment = chunk
    while True:
        time = predict(segment)
        if time < best_time:
            best, best_time = segment, time
        if segment >= longest or segment * 2 > max(config.max_segment, chunk):
            return best
        segment *= 2


def choose_segment(total_rows: int, heads: int, chunk: int, n_sm: int, config: KernelConfig) -> int:
    """Longest power-of-two multiple of `chunk` (≤ max_segment) that still gives every multiprocessor work."""
    if config.segment is not None:
        return config.segment
    target = config.programs_per_sm * n_sm
    segment = chunk
    while segment * 2 <= config.max_segment and -(-total_rows // (segment * 2)) * heads * config.value_split >= target:
        segment *= 2
    return segment


def build_plan(lengths: list[int] | tuple[int, ...], segment: int, device: torch.device) -> SegmentPlan:
    """Cut sequences of the given lengths (laid end to end) into segments of at most `segment` rows."""
    lens = torch.tensor(lengths, dtype=torch.int64)
    if int(lens.sum()) >= 2**31:
        raise ValueError("more than 2**31 rows along the token axis are not supported")
    starts = torch.cumsum(lens, 0) - lens  # [N]
    nseg = (lens + segment - 1) // segment  # [N]; a sequence of length 0 has no segment
    seq_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(nseg, 0)])  # [N+1]
    seg_seq = torch.repeat_interleave(torch.arange(len(lengths)), nseg)  # [S]
    local = torch.arange(int(seq_ptr[-1])) - seq_ptr[seg_seq]  # [S] index of the segment inside its sequence
    seg_bos = starts[seg_seq] + local * segment  # [S]
    seg_len = torch.minimum(starts[seg_seq] + lens[seg_seq] - seg_bos, torch.tensor(segment))  # [S]
    is_last = torch.zeros(len(seg_seq), dtype=torch.bool)
    is_last[seq_ptr[1:][nseg > 0] - 1] = True
    local_segs = torch.nonzero(~is_last).flatten()  # [S']
    # one host-to-device copy for all five index arrays, then views into it
    parts = (seg_bos, seg_len, seg_seq, seq_ptr, local_segs)
    packed = torch.cat(parts).to(device=device, dtype=torch.int32)
    views = torch.split(packed, [len(p) for p in parts])
    return SegmentPlan(
        *views,
        n_seqs=len(lengths),
        n_segments=int(seq_ptr[-1]),
        segment=segment,
        multi=bool((nseg > 1).any()),
        empty_seqs=tuple(int(i) for i in torch.nonzero(lens == 0).flatten()),
    )


@functools.lru_cache(maxsize=64)
def _cached_plan(lengths: tuple[int, ...], segment: int, device: torch.device) -> SegmentPlan:
    return build_plan(lengths, segment, device)


def plan_for(
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    seq_lengths: list[int] | None,
    device: torch.device,
    config: KernelConfig,
    *,
    training: bool = True,
) -> SegmentPlan:
    """The plan for q of `shape` [B, T, H, D]: B rows of T tokens, or packed sequences of `seq_lengths` (B = 1).
    `training=False` (no backward will use it) sizes segments for the forward alone (`forward_segment`).

    Plans are cached by shape: a model calls the kernels once per layer with the same lengths, and building one
    costs host time that the GPU would otherwise spend idle.
    """
    batch, seqlen, heads, head_dim = shape
    lengths = tuple(seq_lengths) if seq_lengths is not None else (seqlen,) * batch
    if training:
        segment = choose_segment(batch * seqlen, heads, config.fwd_chunk(head_dim, dtype), sm_count(device), config)
    else:
        segment = _inference_segment(lengths, heads, head_dim, dtype, sm_count(device), config)
    return _cached_plan(lengths, segment, device)


@functools.lru_cache(maxsize=256)
def _inference_segment(lengths: tuple[int, ...], heads: int, head_dim: int, dtype: torch.dtype, n_sm: int,
                       config: KernelConfig) -> int:  # fmt: skip
    return forward_segment(lengths, heads, head_dim, dtype, n_sm, config)
