"""Kernel benchmark harness: our Triton kernels beside flash-linear-attention, SDPA and the PyTorch path.

Everything runs in one process on one GPU so the numbers compare. Timings are medians from
`triton.testing.do_bench` (CUDA events, after warm-up, L2 flushed between runs); a decode step is captured in a CUDA
graph and replayed, because one step takes microseconds and Python launch overhead would otherwise be what is
measured. Each timing carries the fewest bytes the operation must move (every input read once, every output
written once), so the caller can quote it as a fraction of the memory-bandwidth floor.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmx.kernels.dispatch import lightning_attn, lightning_decode
from mmx.kernels.plan import DEFAULT_CONFIG, KernelConfig
from mmx.kernels.testing import minimax_slopes, random_qkv, rel_rms

IMPLS = ("mmx", "fla", "sdpa", "torch")
OPS = ("prefill", "decode", "backward", "packed")
INPUT_SCALE = 0.1  # q, k, v ~ N(0, 0.1²), keeping sums of k vᵀ in range; fixed so runs compare
# Where the slow contestants stop, in tokens × heads (H = 8: SDPA to 256k tokens, the PyTorch path to 64k / 16k).
SDPA_MAX = 2**21
TORCH_FWD_MAX = 2**19
TORCH_BWD_MAX = 2**17
# Forward configs worth timing against each other, as (name, changes from the built-in defaults), the likeliest
# first so a cut-short sweep (benchmarks/kernels/sweep.py) has measured them; `mmx bench kernels --tune` times them too.
FWD_CANDIDATES: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("masked", {"fwd_form": "masked"}),  # the exact walk, for comparison (74 registers spilled on an H200)
    ("split-64rows-4warps", {"chunk": 64, "value_split": 2, "fwd_warps": 4}),  # no spills, 2 programs per SM
    ("64rows-3stages", {"chunk": 64, "fwd_stages": 3}),
    ("split-8warps", {"value_split": 2, "fwd_warps": 8}),
    ("split-64rows-8warps-3stages", {"chunk": 64, "value_split": 2, "fwd_warps": 8, "fwd_stages": 3}),
    ("local-128rows-2stages", {"local_chunk": 128, "local_stages": 2}),  # the local-state launch before the H200 sweep
    ("local-64rows-4stages", {"local_chunk": 64, "local_stages": 4}),
    ("1stage", {"fwd_stages": 1}),
    ("16warps", {"fwd_warps": 16}),  # a 128-register cap: spills more, listed to show it
]
FWD_VARIANTS: list[dict[str, Any]] = [changes for _, changes in FWD_CANDIDATES]
BWD_VARIANTS: list[dict[str, Any]] = [
    {},
    {"bwd_stages": 3},
    {"bwd_key_split": 2},
    {"programs_per_sm": 2},
]
DECODE_BLOCKS = (16, 32, 64, 128)
DECODE_POOLS = 4  # state pools stepped in turn: 4 × 64 MiB is well past any L2


@dataclass
class Result:
    """One timed case. `tokens` is what one call processes (batch × length; decode: batch)."""

    op: str
    impl: str
    length: int
    batch_size: int
    heads: int
    head_dim: int
    dtype: str
    status: str = "ok"  # "ok" | "oom" | "error"
    ms: float | None = None
    floor_bytes: int = 0
    peak_mem_gb: float | None = None
    note: str = ""

    @property
    def tokens(self) -> int:
        return self.batch_size * (1 if self.op == "decode" else self.length)

    def record(self, bandwidth: float | None) -> dict[str, Any]:
        """The bench.jsonl-style record, with the HBM floor at `bandwidth` bytes/s."""
        floor_ms = self.floor_bytes / bandwidth * 1e3 if bandwidth else None
        ok = self.status == "ok" and self.ms
        return {
            "bench": "kernel",
            **dataclasses.asdict(self),
            "tokens_per_s": self.tokens / (self.ms / 1e3) if ok else None,
            "ttft_s": None,
            "hbm_floor_ms": floor_ms,
            "hbm_fraction": floor_ms / self.ms if ok and floor_ms else None,
        }


def fla_available() -> bool:
    """flash-linear-attention is an optional dependency (`pip install 'mmx[fla]'`)."""
    return importlib.util.find_spec("fla") is not None


def _time_ms(fn: Callable[[], object], graph: bool = False) -> float:
    import triton.testing

    if graph:
        return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _free() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


class KernelBench:
    """Times the contestants on one CUDA device in one dtype."""

    def __init__(
        self, device: torch.device, dtype: torch.dtype = torch.bfloat16, config: KernelConfig = DEFAULT_CONFIG
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.config = config
        self.elt = torch.tensor([], dtype=dtype).element_size()
        self.has_fla = fla_available()

    # contestants ---------------------------------------------------------------------------------------------
    def _ours(self, config: KernelConfig | None = None) -> Callable[..., torch.Tensor]:
        if config is None or config == DEFAULT_CONFIG:
            return lambda q, k, v, slope, **kw: lightning_attn(q, k, v, slope, **kw)[0]
        from mmx.kernels.triton_attn import lightning_attn_triton

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, **kw: Any) -> torch.Tensor:
            lengths = None
            if kw.get("cu_seqlens") is not None:
                cu = kw.pop("cu_seqlens").tolist()
                lengths = [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)]
            return lightning_attn_triton(q, k, v, slope, seq_lengths=lengths, config=config, **kw)[0]

        return run

    @staticmethod
    def _fla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, **kw: Any) -> torch.Tensor:
        from fla.ops.simple_gla import chunk_simple_gla

        return chunk_simple_gla(q, k, v, g_gamma=-slope, scale=1.0, **kw)[0]

    @staticmethod
    def _torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slope: torch.Tensor, **kw: Any) -> torch.Tensor:
        return lightning_attn(q, k, v, slope, impl="torch", **kw)[0]

    def _contestants(self, impls: tuple[str, ...], work: int, torch_max: int) -> Iterator[tuple[str, Callable]]:
        for impl in impls:
            if impl == "mmx":
                yield impl, self._ours()
            elif impl == "fla" and self.has_fla:
                yield impl, self._fla
            elif impl == "torch" and work <= torch_max:
                yield impl, self._torch

    # cases -----------------------------------------------------------------------------------------------------
    def _result(self, op: str, impl: str, length: int, batch: int, heads: int, dim: int, floor: int) -> Result:
        return Result(op, impl, length, batch, heads, dim, str(self.dtype).removeprefix("torch."), floor_bytes=floor)

    def _measure(self, result: Result, fn: Callable[[], object], graph: bool = False) -> Result:
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            result.ms = _time_ms(fn, graph)
            result.peak_mem_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
        except torch.cuda.OutOfMemoryError:
            result.status = "oom"
        except Exception as err:  # a contestant failing must not end the whole benchmark
            result.status, result.note = "error", f"{type(err).__name__}: {err}"[:300]
        torch.cuda.synchronize()
        return result

    def _inputs(self, batch: int, length: int, heads: int, dim: int) -> tuple[torch.Tensor, ...]:
        _free()  # the previous case's tensors are gone; hand their cached blocks back before allocating big ones
        q, k, v = random_qkv(batch, length, heads, dim, dtype=self.dtype, device=self.device, scale=INPUT_SCALE)
        return q, k, v, minimax_slopes(heads, device=self.device)

    def prefill(self, length: int, heads: int, dim: int, impls: tuple[str, ...] = IMPLS) -> Iterator[Result]:
        """Forward over one sequence of `length` tokens; the floor is q, k, v read and o written once."""
        floor = 4 * length * heads * dim * self.elt
        try:
            q, k, v, slope = self._inputs(1, length, heads, dim)
        except torch.cuda.OutOfMemoryError:  # the inputs alone do not fit: every contestant is out
            _free()
            for impl in impls:
                res = self._result("prefill", impl, length, 1, heads, dim, floor)
                res.status = "oom"
                yield res
            return
        with torch.no_grad():
            for impl, fn in self._contestants(impls, length * heads, TORCH_FWD_MAX):
                res = self._result("prefill", impl, length, 1, heads, dim, floor)
                yield self._measure(res, lambda fn=fn: fn(q, k, v, slope))
            if "sdpa" in impls and length * heads <= SDPA_MAX:
                qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # [B, H, T, D]
                res = self._result("prefill", "sdpa", length, 1, heads, dim, floor)
                yield self._measure(res, lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True))

    def backward(self, length: int, heads: int, dim: int, impls: tuple[str, ...] = IMPLS) -> Iterator[Result]:
        """dq, dk, dv from do (the forward is outside the timing); floor: q, k, v, do read, dq, dk, dv written."""
        floor = 7 * length * heads * dim * self.elt
        q, k, v, slope = self._inputs(1, length, heads, dim)
        leaves = [x.requires_grad_() for x in (q, k, v)]
        do = torch.randn_like(q)
        for impl, fn in self._contestants(impls, length * heads, TORCH_BWD_MAX):
            res = self._result("backward", impl, length, 1, heads, dim, floor)
            try:
                o = fn(*leaves, slope)
            except torch.cuda.OutOfMemoryError:
                res.status = "oom"
                _free()
                yield res
                continue
            yield self._measure(res, lambda o=o: torch.autograd.grad(o, leaves, do, retain_graph=True))

    def decode(self, batch: int, heads: int, dim: int, impls: tuple[str, ...] = IMPLS) -> Iterator[Result]:
        """One token for each of `batch` sequences with fp32 states [B, H, D, D] (read and written once).

        "decode": kernel time, from a CUDA graph that steps DECODE_POOLS different state pools in turn, so the
        state (64 MiB at B=64, H=8, D=128) cannot sit in L2 between steps. "decode_eager": one Python call per
        step, as an uncaptured decode loop pays it (launch and dispatch overhead included).
        """
        floor = 2 * batch * heads * dim * dim * 4 + 4 * batch * heads * dim * self.elt
        q, k, v = (x[:, 0] for x in self._inputs(batch, 1, heads, dim)[:3])  # [B, H, D]
        slope = minimax_slopes(heads, device=self.device)
        pools = [torch.randn(batch, heads, dim, dim, device=self.device) * INPUT_SCALE for _ in range(DECODE_POOLS)]

        def step(impl: str, state: torch.Tensor) -> object:
            if impl == "fla":
                from fla.ops.simple_gla import fused_recurrent_simple_gla

                return fused_recurrent_simple_gla(q[:, None], k[:, None], v[:, None], g_gamma=-slope, scale=1.0,
                                                  initial_state=state, output_final_state=True)  # fmt: skip
            return lightning_decode(q, k, v, slope, state, impl="auto" if impl == "mmx" else "torch")

        for impl in impls:
            if impl == "sdpa" or (impl == "fla" and not self.has_fla):
                continue
            res = self._result("decode", impl, 1, batch, heads, dim, floor)
            res.note = f"CUDA graph, {DECODE_POOLS} state pools in turn"
            self._measure(res, lambda impl=impl: [step(impl, p) for p in pools], graph=True)
            res.ms = res.ms / DECODE_POOLS if res.ms is not None else None
            yield res
            eager = self._result("decode_eager", impl, 1, batch, heads, dim, floor)
            eager.note = "one Python call per step"
            yield self._measure(eager, lambda impl=impl: step(impl, pools[0]))

    def packed(self, n_docs: int, doc_len: int, heads: int, dim: int) -> Iterator[Result]:
        """`n_docs` documents of `doc_len` packed in one call (cu_seqlens) vs one sequence of the same total."""
        total = n_docs * doc_len
        floor = 4 * total * heads * dim * self.elt
        q, k, v, slope = self._inputs(1, total, heads, dim)
        cu = torch.arange(0, total + 1, doc_len, device=self.device, dtype=torch.int32)
        ours = self._ours()
        with torch.no_grad():
            res = self._result("packed", "mmx", total, 1, heads, dim, floor)
            res.note = f"{n_docs} x {doc_len} tokens via cu_seqlens"
            yield self._measure(res, lambda: ours(q, k, v, slope, cu_seqlens=cu))
            res = self._result("packed", "mmx", total, 1, heads, dim, floor)
            res.note = f"one sequence of {total} tokens"
            yield self._measure(res, lambda: ours(q, k, v, slope))

    # checks and tuning -------------------------------------------------------------------------------------------
    def agreement(self, length: int, heads: int, dim: int) -> dict[str, float]:
        """Relative RMS of our bf16 output against fla's and against the fp32 PyTorch path (same inputs)."""
        q, k, v, slope = self._inputs(1, length, heads, dim)
        with torch.no_grad():
            ours = self._ours()(q, k, v, slope)
            out = {"vs_torch_fp32": rel_rms(ours, self._torch(q.float(), k.float(), v.float(), slope))}
            if self.has_fla:
                out["vs_fla"] = rel_rms(ours, self._fla(q, k, v, slope))
        _free()
        return out

    def tune(self, op: str, length: int, heads: int, dim: int, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Time `op` ("prefill" or "backward") for each config variant (fields changed from the default)."""
        rows = []
        q, k, v, slope = self._inputs(1, length, heads, dim)
        do = torch.randn_like(q)
        for changes in variants:
            fn = self._ours(self.config.with_(**changes))
            res = self._result(op, "mmx", length, 1, heads, dim, 0)
            if op == "prefill":
                with torch.no_grad():
                    self._measure(res, lambda fn=fn: fn(q, k, v, slope))
            else:
                leaves = [x.detach().requires_grad_() for x in (q, k, v)]
                o = fn(*leaves, slope)
                self._measure(res, lambda o=o, leaves=leaves: torch.autograd.grad(o, leaves, do, retain_graph=True))
            rows.append({"op": op, "length": length, "heads": heads, "changes": changes, "ms": res.ms,
                         "status": res.status, "note": res.note})  # fmt: skip
        return rows

    def tune_decode(self, batch: int, heads: int, dim: int, block_vs: tuple[int, ...]) -> list[dict[str, Any]]:
        """Time the decode step (graph replay over rotated state pools) for each value-block width."""
        from mmx.kernels.triton_attn import lightning_decode_triton

        q, k, v = (x[:, 0] for x in self._inputs(batch, 1, heads, dim)[:3])
        slope = minimax_slopes(heads, device=self.device)
        pools = [torch.randn(batch, heads, dim, dim, device=self.device) * INPUT_SCALE for _ in range(DECODE_POOLS)]
        rows = []
        for bv in block_vs:
            config = self.config.with_(decode_block_v=bv)
            res = self._result("decode", "mmx", 1, batch, heads, dim, 0)
            self._measure(res, lambda c=config: [lightning_decode_triton(q, k, v, slope, p, config=c) for p in pools],
                          graph=True)  # fmt: skip
            ms = res.ms / DECODE_POOLS if res.ms else None
            rows.append({"op": "decode", "batch": batch, "heads": heads, "changes": {"decode_block_v": bv},
                         "ms": ms, "status": res.status, "note": res.note})  # fmt: skip
        return rows

    def breakdown(self, length: int, heads: int, dim: int, config: KernelConfig | None = None) -> dict[str, Any]:
        """Time each kernel of our forward and backward on its own, with its register, spill and shared-memory use."""
        from mmx.kernels import triton_bwd, triton_fwd
        from mmx.kernels.plan import plan_for
        from mmx.kernels.triton_scan import scan_segments

        config = config or self.config
        q, k, v, slope = self._inputs(1, length, heads, dim)
        do = torch.randn_like(q)
        plan = plan_for((1, length, heads, dim), self.dtype, None, self.device, config)
        local, _ = triton_fwd.local_states(k, v, slope, plan, config)
        starts, _ = scan_segments(local, None, slope, plan, reverse=False)
        _, r, _ = triton_bwd.query_grads(do, q, k, v, slope, starts, True, plan, config)
        carry, _ = scan_segments(r, None, slope, plan, reverse=True)
        phases: dict[str, Callable[[], tuple]] = {
            "fwd_local_states": lambda: triton_fwd.local_states(k, v, slope, plan, config),
            "fwd_scan": lambda: scan_segments(local, None, slope, plan, reverse=False),
            "fwd_outputs": lambda: triton_fwd.outputs(q, k, v, slope, starts, True, plan, config, None),
            "bwd_dq": lambda: triton_bwd.query_grads(do, q, k, v, slope, starts, True, plan, config),
            "bwd_scan": lambda: scan_segments(r, None, slope, plan, reverse=True),
            "bwd_dkv": lambda: triton_bwd.key_value_grads(do, q, k, v, slope, carry, True, plan, config, None),
        }
        out: dict[str, Any] = {"length": length, "heads": heads, "segment": plan.segment,
                               "segments": plan.n_segments}  # fmt: skip
        for name, fn in phases.items():
            kernel = fn()[-1]
            res = self._measure(self._result(name, "mmx", length, 1, heads, dim, 0), fn)
            out[name] = {"ms": res.ms, "status": res.status, **kernel_stats(kernel)}
        return out


def kernel_stats(kernel: object) -> dict[str, Any]:
    """Registers and spills per thread, shared memory, warps, and whether Hopper's wgmma was used (when known)."""
    meta = getattr(kernel, "metadata", None)
    ttgir = getattr(kernel, "asm", {}).get("ttgir", "")
    return {
        "regs": getattr(kernel, "n_regs", None),
        "spills": getattr(kernel, "n_spills", None),
        "shared": getattr(meta, "shared", None),
        "warps": getattr(meta, "num_warps", None),
        "wgmma": ("warp_group_dot" in ttgir) if ttgir else None,
    }
