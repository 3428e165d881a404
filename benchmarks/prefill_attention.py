"""Chunked-prefill softmax attention at the 4-layer slice's shape: the time and error of every path, on one device.

Defaults are MiniMax-Text-01's softmax layer (64 query heads on 8 key/value heads of 128 channels, bf16) and the
bench's prefill of the full-width slice (a 256k-token prompt in 4096-token chunks behind a cache), with random
queries, keys and values. Each path of `mmx.model.chunk_attention` computes the whole prompt's attention chunk by
chunk (the first chunk is a plain causal call, as in the model) twice: the cold pass pays cuDNN's plan builds, the
warm one is the steady state. For reference: one causal SDPA call over the whole prompt, transformers' way; single
kernel calls at the last chunk's shape; and, per path, the error of the last 128 queries of three chunks (the first
key/value head's query heads) against fp32 softmax with the mask written out. Last, the whole model (`small` cut to
8 hybrid layers, random weights, up to 64k tokens) prefilled through each path against one forward without a cache.

    python -m benchmarks.prefill_attention --out attention.json
    python -m benchmarks.prefill_attention --device cpu --length 8k --chunk 1k --heads 8 --kv-heads 2 --head-dim 32

Run from the repository root with mmx importable (`pip install -e .`, or `source benchmarks/gpu_env.sh`); set
MMX_COMMIT to record the commit of a copy without `.git`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mmx.model import chunk_attention as ca
from mmx.sizes import format_size, parse_size

Path = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
CHECKED_ROWS = 128  # queries per checked chunk compared with the fp32 reference


def paths(length: int) -> dict[str, Path]:
    """The chunked paths compared: the two of the model, the split path restricted to FlashAttention-2, and the split
    path with no block limit, where `key_pieces` cuts each chunk's cached keys into powers of two (up to half the
    prompt; `benchmarks/results/throughput/h200-prefill-attention-256k.json` calls this row "split, cuDNN in one call
    per chunk", which it is not)."""
    return {
        "masked": ca.masked_attention,
        "split": ca.split_attention,
        "split, FlashAttention-2 only": lambda q, k, v: ca.split_attention(q, k, v, order=("flash", "cpu")),
        "split, no key block limit": lambda q, k, v: ca.split_attention(q, k, v, key_block=length),
    }


def causal_flops(length: int, heads: int, head_dim: int) -> float:
    """QKᵀ and PV of causal attention over `length` tokens: 2·2·D multiply-adds per (query, visible key) pair."""
    return 4.0 * heads * head_dim * length * (length + 1) / 2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def first_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The model's first chunk: nothing cached yet, one causal SDPA call."""
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D], [B, KV, T, D]
    return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True).transpose(1, 2)


def sweep(path: Path, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> None:
    """A whole prompt's attention, chunk by chunk (outputs dropped as they come)."""
    for start in range(0, q.shape[1], chunk):
        end = min(start + chunk, q.shape[1])
        attend = first_chunk if start == 0 else path
        attend(q[:, start:end], k[:, :end], v[:, :end])


def reference_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, end: int, rows: int) -> torch.Tensor:
    """fp32 softmax attention of the last `rows` queries before `end`, query heads of key/value head 0 only."""
    groups = q.shape[2] // k.shape[2]
    qs = q[:, end - rows : end, :groups].float()  # [1, rows, G, D]
    scores = torch.einsum("bthd,bsd->bhts", qs, k[:, :end, 0].float()) / math.sqrt(q.shape[-1])  # [1, G, rows, end]
    positions = torch.arange(end - rows, end, device=q.device)
    visible = torch.arange(end, device=q.device)[None, :] <= positions[:, None]  # [rows, end]
    weights = scores.masked_fill(~visible, -math.inf).softmax(dim=-1)
    return torch.einsum("bhts,bsd->bthd", weights, v[:, :end, 0].float())  # [1, rows, G, D]


def errors(path: Path, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> list[dict[str, float]]:
    """Relative RMS and max abs error of `path` at three chunks behind a cache (second, middle, last)."""
    chunks = math.ceil(q.shape[1] / chunk)
    groups = q.shape[2] // k.shape[2]
    found = []
    for index in sorted({1, chunks // 2, chunks - 1}):
        start, end = index * chunk, min((index + 1) * chunk, q.shape[1])
        rows = min(CHECKED_ROWS, end - start)
        out = path(q[:, start:end], k[:, :end], v[:, :end])[:, -rows:, :groups].float()
        ref = reference_rows(q, k, v, end, rows)
        rel = ((out - ref).norm() / ref.norm()).item()
        found.append({"chunk": index, "rel_rms": rel, "max_abs": (out - ref).abs().max().item()})
    return found


def time_paths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, flops: float) -> dict[str, object]:
    """Cold and warm sweeps of every chunked path, and its errors."""
    found = {}
    for label, path in paths(q.shape[1]).items():
        cold = timed(q.device, lambda path=path: sweep(path, q, k, v, chunk))
        warm = timed(q.device, lambda path=path: sweep(path, q, k, v, chunk))
        errs = errors(path, q, k, v, chunk)
        found[label] = {"cold_s": cold, "warm_s": warm, "tflops": flops / warm / 1e12, "errors": errs}
        worst = max(e["rel_rms"] for e in errs)
        rate = f"{flops / warm / 1e12:6.1f} TFLOP/s"
        print(f"  {label:36s} cold {cold:7.3f}s  warm {warm:7.3f}s  {rate}  rel. error {worst:.1e}", flush=True)
    return found


def time_one_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, flops: float) -> dict[str, object]:
    """One causal SDPA call over the whole prompt (transformers' prefill): torch's kernel choice, and FA2 forced."""
    choices: list[tuple[str, list[SDPBackend]]] = [("torch's choice", [])]
    if q.is_cuda:
        choices.append(("FlashAttention-2", [SDPBackend.FLASH_ATTENTION]))
    found = {}
    for label, backends in choices:
        with sdpa_kernel(backends) if backends else contextlib.nullcontext():
            cold = timed(q.device, lambda: first_chunk(q, k, v))
            warm = timed(q.device, lambda: first_chunk(q, k, v))
        found[label] = {"cold_s": cold, "warm_s": warm, "tflops": flops / warm / 1e12}
        rate = f"{flops / warm / 1e12:6.1f} TFLOP/s"
        print(f"  one causal call, {label:19s} cold {cold:7.3f}s  warm {warm:7.3f}s  {rate}", flush=True)
    return found


def sdpa_choice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The kernel torch's SDPA picks for one causal call of this shape."""
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    name = SDPBackend(torch._fused_sdp_choice(qh, kh, vh, is_causal=True, enable_gqa=True)).name
    print(f"  torch's SDPA picks {name} for one causal call over the prompt", flush=True)
    return name


def kernel_probes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> dict[str, dict[str, float]]:
    """Each usable kernel on the last chunk's cached keys alone (folded rows, no mask): seconds and TFLOP/s."""
    B, L, H, D = q.shape
    KV = k.shape[2]
    T = L - (math.ceil(L / chunk) - 1) * chunk
    P = L - T
    q_rows = q[:, P:].transpose(1, 2).reshape(B, KV, H // KV * T, D)  # [B, KV, G·T, D]
    kh, vh = k[:, :P].transpose(1, 2), v[:, :P].transpose(1, 2)  # [B, KV, P, D]
    flops = 4.0 * H * T * P * D
    found = {}
    for name, kernel in ca.KERNELS.items():
        if not kernel.usable(q_rows, kh, vh, False):
            continue
        run = lambda kernel=kernel: kernel.attend(q_rows, kh, vh, False, D**-0.5)  # noqa: E731
        run()  # cold: plans, handles
        seconds = min(timed(q.device, run) for _ in range(3))
        found[name] = {"seconds": seconds, "tflops": flops / seconds / 1e12}
        print(f"  kernel {name:9s} {H // KV * T} rows x {P} keys: {seconds * 1e3:8.2f} ms "
              f"{flops / seconds / 1e12:6.1f} TFLOP/s", flush=True)  # fmt: skip
    return found


def model_agreement(device: torch.device, dtype: torch.dtype, length: int, chunk: int) -> dict[str, float]:
    """The whole model: `small` cut to 8 hybrid layers (random weights) prefilled in chunks through each path, against
    one forward without a cache; relative RMS differences of the last position's logits."""
    from mmx.model.config import MiniMaxConfig
    from mmx.model.generate import prefill
    from mmx.workflows.bench.subjects import build_native, reshape

    model = build_native(reshape(MiniMaxConfig.from_name("small"), 8, "hybrid"), device, dtype, seed=0)
    ids = torch.randint(
        0, model.config.vocab_size, (1, length), device=device, generator=torch.Generator(device).manual_seed(1)
    )
    with torch.no_grad():
        logits = {"one forward": model(ids, logits_to_keep=1)[:, -1].float()}
        for path in ca.PREFILL_PATHS:
            with ca.prefill_path(path):
                logits[path] = prefill(model, ids, model.new_cache(1), chunk).float()
    found = {}
    for a, b in (("split", "masked"), ("split", "one forward"), ("masked", "one forward")):
        found[f"{a} vs {b}"] = ((logits[a] - logits[b]).norm() / logits[b].norm()).item()
        print(f"  model logits, {a} vs {b}: rel. difference {found[f'{a} vs {b}']:.1e}", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--out", help="write the results here as JSON (rewritten after every section)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (bf16 on CUDA, fp32 on the CPU)")
    parser.add_argument("--length", default="256k", help="prompt length in tokens")
    parser.add_argument("--chunk", default="4k", help="prefill chunk in tokens")
    parser.add_argument("--heads", type=int, default=64, help="query heads")
    parser.add_argument("--kv-heads", type=int, default=8, help="key/value heads")
    parser.add_argument("--head-dim", type=int, default=128, help="channels per head")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    L, chunk = parse_size(args.length), parse_size(args.chunk)
    H, KV, D = args.heads, args.kv_heads, args.head_dim
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, L, H, D, device=device, dtype=dtype, generator=gen)
    k = torch.randn(1, L, KV, D, device=device, dtype=dtype, generator=gen)
    v = torch.randn(1, L, KV, D, device=device, dtype=dtype, generator=gen)
    flops = causal_flops(L, H, D)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {dtype}")
    print(f"{format_size(L)} tokens in {format_size(chunk)} chunks, H={H} KV={KV} D={D}: {flops / 1e12:.4g} TFLOP")
    results: dict[str, object] = {
        "device": name,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "dtype": str(dtype).removeprefix("torch."),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": os.environ.get("MMX_COMMIT"),
        "shape": {"length": L, "chunk": chunk, "heads": H, "kv_heads": KV, "head_dim": D},
        "flops": flops,
    }
    sections: list[tuple[str, Callable[[], object]]] = [
        ("paths", lambda: time_paths(q, k, v, chunk, flops)),
        ("one_call", lambda: time_one_call(q, k, v, flops)),
        ("kernels_at_last_chunk", lambda: kernel_probes(q, k, v, chunk)),
        ("model_agreement", lambda: model_agreement(device, dtype, min(L, 65536), chunk)),
    ]
    if device.type == "cuda":
        sections.append(("sdpa_choice", lambda: sdpa_choice(q, k, v)))
    for key, measure in sections:
        try:
            results[key] = measure()
        except KeyboardInterrupt:  # the caller's time limit: what is measured so far is already written
            print(f"  interrupted during {key}", flush=True)
            raise SystemExit(130) from None
        except Exception as err:  # a section that fails is recorded; the others still run
            results[key] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"}
            print(f"  {key}: {results[key]['error']}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
