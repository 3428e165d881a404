"""Measurements behind docs/speed.md that `mmx` commands do not make themselves; `benchmarks/speed_batch.sh` runs them
on a GPU beside the commands that do.

    python3 -m benchmarks.speed segments --lengths 4k,16k,64k,256k --heads 8,64 --out segments.json
    python3 -m benchmarks.speed compare --runs DIR --timings timings.jsonl --out summary.json

`segments` times the lightning prefill forward (bf16, D=128, one sequence) at every power-of-two segment length
beside the one the inference plan picks (`mmx.kernels.plan.forward_segment`) and the training rule's, so the plan's
cost model can be checked against the card. `compare` reads the run directories a batch left (RULER sweeps at the
issue's starting commit, with prefix reuse and without; a 4M eval sample and the bench's 4M prefill) and reports wall
time, time in generate and prefill, tokens prefilled against read, and the share of predictions that differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmx.sizes import format_size, parse_sizes


def _time_ms(fn: Any) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def segments(lengths: list[int], heads: list[int], head_dim: int) -> list[dict[str, Any]]:
    """Forward time at each segment length, the plan's pick and the training rule's, per (length, heads)."""
    rows = []
    for h in heads:
        for t in lengths:
            row = _segment_row(t, h, head_dim)
            rows.append(row)
            rule = row["ms_by_segment"].get(str(row["training_rule"]), float("nan"))
            print(f"T={format_size(t):>5} H={h:<3} picked {row['picked']:>6} {row['picked_ms']:8.3f} ms | training "
                  f"rule {row['training_rule']:>6} {rule:8.3f} ms | best {row['best']:>6} {row['best_ms']:8.3f} ms",
                  flush=True)  # fmt: skip
    return rows


def _segment_row(t: int, h: int, head_dim: int) -> dict[str, Any]:
    import torch

    from mmx.kernels.plan import DEFAULT_CONFIG, choose_segment, forward_segment, sm_count
    from mmx.kernels.testing import minimax_slopes, random_qkv
    from mmx.kernels.triton_attn import lightning_attn_triton

    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.cuda.empty_cache()
    q, k, v = random_qkv(1, t, h, head_dim, dtype=dtype, device=device, scale=0.1)
    slope = minimax_slopes(h, device=device)
    chunk = DEFAULT_CONFIG.fwd_chunk(head_dim, dtype)
    picked = forward_segment((t,), h, head_dim, dtype, sm_count(device), DEFAULT_CONFIG)
    tuned = choose_segment(t, h, chunk, sm_count(device), DEFAULT_CONFIG)
    times = {}
    segment = chunk
    with torch.no_grad():
        while segment <= max(DEFAULT_CONFIG.max_segment, chunk) and segment // 2 < t:
            config = DEFAULT_CONFIG.with_(segment=segment)
            times[segment] = _time_ms(lambda c=config: lightning_attn_triton(q, k, v, slope, config=c))
            segment *= 2
        picked_ms = _time_ms(lambda: lightning_attn_triton(q, k, v, slope))
    best = min(times, key=times.__getitem__)
    return {"length": t, "heads": h, "picked": picked, "picked_ms": picked_ms, "training_rule": tuned,
            "best": best, "best_ms": times[best], "ms_by_segment": {str(s): ms for s, ms in times.items()}}  # fmt: skip


# ------------------------------------------------------------------------------------------------------- compare


def _records(run: Path) -> dict[tuple, dict[str, Any]]:
    path = run / "samples.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.setdefault((r["task"], r["length"], r["index"]), r)
    return out


def _sum(records: dict[tuple, dict[str, Any]], *keys: str) -> float | None:
    values = []
    for r in records.values():
        value: Any = r
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return float(sum(values)) if values else None


def sweep_summary(run: Path, wall_s: float | None) -> dict[str, Any]:
    """What one RULER run directory says about its time and tokens."""
    records = _records(run)
    ok = sum(r["status"] == "ok" for r in records.values())
    sweeps = run / "sweeps.jsonl"
    logged = [json.loads(x) for x in sweeps.read_text().splitlines() if x.strip()] if sweeps.exists() else []
    return {
        "run": str(run),
        "samples": len(records),
        "ok": ok,
        "wall_s": wall_s,
        "sweep_wall_s": sum(x["wall_s"] for x in logged) if logged else None,
        "generate_s": _sum(records, "timings", "generate_s"),
        "prefill_s": _sum(records, "timings", "prefill_s"),
        "prompt_tokens": _sum(records, "prompt_tokens"),
        "prefilled_tokens": _sum(records, "prefilled_tokens"),
        "read_tokens": _sum(records, "read_tokens"),
    }


def differing(a: dict[tuple, dict[str, Any]], b: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """Predictions of the samples both runs scored from the same prompt: how many differ, and where."""
    same_prompt = [key for key in a if key in b and a[key].get("prompt_hash") == b[key].get("prompt_hash")]
    scored = [key for key in same_prompt if a[key]["status"] == b[key]["status"] == "ok"]
    differ = [key for key in scored if a[key]["prediction"] != b[key]["prediction"]]
    score_a = sum(a[key]["score"] for key in scored)
    score_b = sum(b[key]["score"] for key in scored)
    return {
        "compared": len(scored),
        "differ": len(differ),
        "share": len(differ) / len(scored) if scored else None,
        "mean_score": [100 * score_a / len(scored), 100 * score_b / len(scored)] if scored else None,
        "examples": [
            {"task": k[0], "length": k[1], "index": k[2], "predictions": [a[k]["prediction"], b[k]["prediction"]]}
            for k in differ[:10]
        ],  # fmt: skip
    }


def compare(runs: Path, timings: Path | None) -> dict[str, Any]:
    """The batch's summary: sweeps (baseline, reuse on, reuse off), their predictions, and 4M eval vs bench."""
    walls: dict[str, float] = {}
    if timings is not None and timings.exists():
        for line in timings.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                walls[entry["run"]] = walls.get(entry["run"], 0.0) + entry["wall_s"]
    names = ("sweep-base", "sweep-on", "sweep-off")
    summary: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sweeps": {n: sweep_summary(runs / n, walls.get(n)) for n in names if (runs / n).is_dir()},
    }
    loaded = {n: _records(runs / n) for n in names}
    summary["predictions"] = {
        f"{x} vs {y}": differing(loaded[x], loaded[y])
        for x, y in (("sweep-on", "sweep-off"), ("sweep-base", "sweep-on"), ("sweep-base", "sweep-off"))
        if loaded[x] and loaded[y]
    }
    base, on = summary["sweeps"].get("sweep-base"), summary["sweeps"].get("sweep-on")
    if base and on and base.get("wall_s") and on.get("wall_s"):
        summary["speedup_wall"] = base["wall_s"] / on["wall_s"]
    summary["eval4m"] = _eval_vs_bench(runs / "eval-4m", runs / "bench-4m")
    return summary


def _eval_vs_bench(eval_run: Path, bench_run: Path) -> dict[str, Any] | None:
    records = list(_records(eval_run).values())
    bench = bench_run / "bench.jsonl"
    if not records or not bench.exists():
        return None
    prefill = [json.loads(x) for x in bench.read_text().splitlines() if x.strip()]
    ttft = next((r["ttft_s"] for r in prefill if r.get("bench") == "prefill" and r.get("status") == "ok"), None)
    sample = records[0]
    timings = sample.get("timings", {})
    out = {"eval_generate_s": timings.get("generate_s"), "eval_prefill_s": timings.get("prefill_s"),
           "bench_prefill_s": ttft, "prompt_tokens": sample.get("prompt_tokens")}  # fmt: skip
    if ttft and timings.get("prefill_s"):
        out["eval_over_bench"] = timings["prefill_s"] / ttft
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segments", help="time the lightning forward at every segment length (CUDA)")
    seg.add_argument("--lengths", default="4k,8k,16k,32k,64k,256k")
    seg.add_argument("--heads", default="8,64")
    seg.add_argument("--head-dim", type=int, default=128)
    seg.add_argument("--out", type=Path, required=True, help="JSON file to write")
    cmp_ = sub.add_parser("compare", help="summarise the run directories a speed batch left")
    cmp_.add_argument("--runs", type=Path, required=True, help="folder holding sweep-base/, sweep-on/, … ")
    cmp_.add_argument("--timings", type=Path, default=None, help="timings.jsonl the batch wrote (wall per call)")
    cmp_.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.command == "segments":
        heads = [int(h) for h in args.heads.split(",") if h.strip()]
        result: Any = {"rows": segments(parse_sizes(args.lengths), heads, args.head_dim)}
    else:
        result = compare(args.runs, args.timings)
        print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
