"""Registers, spills and shared memory of the forward kernels on a GPU architecture, without a GPU.

Triton compiles for any target on any machine, and ptxas (bundled with Triton) reports what each thread of the
compiled kernel holds. A kernel that needs more than the 255 registers a thread may have keeps the rest in local
memory and pays for it on every block, which is why the forward configs were compared this way before any GPU ran
them. It matches the GPU: the masked outputs kernel at 128-row blocks shows the 74 spilled registers (296 bytes) an
H200 reported. Run with TRITON_INTERPRET unset (the interpreter replaces the kernels):

    python3 -m benchmarks.kernels.ptxas            # every tuning candidate, bf16, head dim 128, sm_90 (H100/H200)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmx.kernels.plan import KernelConfig

_TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Usage:
    """Per-thread registers, bytes spilled to local memory per thread, and shared memory per program."""

    regs: int
    spill_bytes: int
    shared: int

    def __str__(self) -> str:
        return f"{self.regs} regs, {self.spill_bytes} B spilled, {self.shared} B shared"


def compile_usage(kernel: object, meta: dict[str, object], options: dict[str, int], pointers: dict[str, str],
                  arch: int) -> Usage:  # fmt: skip
    """Compile `kernel` (a triton.jit function) for sm_`arch` with these constexprs and launch options.

    `pointers` gives the element type of every pointer argument; the other runtime arguments are int32 strides.
    Every pointer and stride is taken as a multiple of 16, as Triton specializes them for contiguous inputs.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    names = kernel.arg_names  # type: ignore[attr-defined]
    signature = {n: "constexpr" if n in meta else f"*{pointers[n]}" if n in pointers else "i32" for n in names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in meta}
    source = ASTSource(kernel, signature, dict(meta), aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=dict(options))
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        arch_name = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={arch_name}", ptx.name, "-o", "/dev/null"],
                             capture_output=True, text=True, check=True).stderr  # fmt: skip
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    if regs is None or spills is None:
        raise RuntimeError(f"unexpected ptxas output: {log[-500:]}")
    return Usage(int(regs.group(1)), int(spills.group(1)), int(compiled.metadata.shared))


def forward_usage(config: KernelConfig, dtype: torch.dtype = torch.bfloat16, heads: int = 8, head_dim: int = 128,
                  arch: int = 90) -> dict[str, Usage]:  # fmt: skip
    """Usage of the local-state kernel and of each outputs walk a long sequence launches with `config`."""
    from mmx.kernels import triton_fwd

    if not hasattr(triton_fwd._output_kernel, "arg_names"):
        raise RuntimeError("the kernels were built for Triton's interpreter; run with TRITON_INTERPRET unset")
    elt = _TRITON_TYPES[dtype]
    io = {name: elt for name in ("q", "k", "v", "o")}
    index = {name: "i32" for name in ("local_segs", "seg_bos", "seg_len", "seg_seq", "seq_ptr")}
    states = {name: "fp32" for name in ("slope", "states", "h_start", "h_final")}
    pointers = io | index | states
    meta, options = triton_fwd.local_launch(config, dtype, heads, head_dim, head_dim)
    usage = {"local": compile_usage(triton_fwd._local_state_kernel, meta, options, pointers, arch)}
    for walk in triton_fwd.output_walks(config, dtype):
        meta, options = triton_fwd.output_launch(config, dtype, heads, head_dim, head_dim, walk, 2, False)
        name = {0: "outputs", 1: "outputs factored", 2: "outputs masked (steep heads)"}[walk]
        usage[name] = compile_usage(triton_fwd._output_kernel, meta, options, pointers, arch)
    return usage


def main(argv: Sequence[str] | None = None) -> int:
    from mmx.workflows.bench.kernels import FWD_CANDIDATES

    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.kernels.ptxas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability × 10 (90: H100/H200)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args(argv)
    dtype = {v: k for k, v in _TRITON_TYPES.items()}[args.dtype]
    for name, changes in FWD_CANDIDATES:
        usage = forward_usage(KernelConfig(**changes), dtype, head_dim=args.head_dim, arch=args.arch)
        print(f"{name:<28} " + " | ".join(f"{kernel}: {u}" for kernel, u in usage.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
