"""Collect one phase of `benchmarks/scale_batch.sh` into one JSON file: where and when it ran, every command with
its wall time and exit code, and the measurements.

    python -m benchmarks.scale_summary PHASE RUNS_DIR --out scale-PHASE.json

From the run directories under RUNS_DIR (written by `mmx bench throughput` and `mmx eval`):

- bench runs: each record's speed (tokens/s, TTFT or ms/step, MFU or bandwidth use), peak memory (the largest over
  the ranks, and every rank's), and the memory plan's peak for the same run (`planned_peak_gb`), with their ratio;
- phase A: the one-line refusal of the full model on one GPU;
- phase C: the whole model's memory plan at 4M tokens per rank (tensor parallel 8, fp8 experts) against this GPU's
  memory, beside the measured hybrid period;
- phase D: per data-parallel run, its wall time, GPUs × time against the one-GPU run (efficiency = T1 / (N · TN),
  start-up of the ranks included), the seconds its samples spent generating summed over the ranks (equal across
  runs when each GPU is as fast alone as beside the others), and whether its records equal the one-GPU run's
  (ignoring order, timings and batch sizes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_FIELDS = (
    "bench",
    "impl",
    "length",
    "batch_size",
    "status",
    "tokens_per_s",
    "ttft_s",
    "step_s",
    "mfu",
    "bandwidth_util",
    "peak_mem_gb",
    "peak_mem_gb_per_rank",
    "planned_peak_gb",
    "tensor_parallel",
    "data_parallel",
    "quantized_experts",
    "chunk_size",
    "error",
)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def machine() -> dict[str, Any]:
    """GPU names, counts and versions, the date, and the commit the checkout says it is."""
    import torch

    commit = Path(".commit").read_text().strip() if Path(".commit").is_file() else None
    if commit is None:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = done.stdout.strip() or None
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "gpus": names,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def bench_runs(runs: Path) -> dict[str, Any]:
    """Every bench run under `runs`: its command, launch and records (selected fields)."""
    found = {}
    for directory in sorted(p for p in runs.iterdir() if (p / "bench.jsonl").is_file()):
        meta = json.loads((directory / "run.json").read_text())
        records = []
        for record in _jsonl(directory / "bench.jsonl"):
            kept = {key: record[key] for key in BENCH_FIELDS if key in record}
            if record.get("peak_mem_gb") and record.get("planned_peak_gb"):
                kept["measured_over_planned"] = round(record["peak_mem_gb"] / record["planned_peak_gb"], 3)
            records.append(kept)
        found[directory.name] = {"command": meta.get("command"), "launch": meta.get("launch"), "records": records}
    return found


def full_model_plan(length: int) -> dict[str, Any]:
    """MiniMax-Text-01's plan per rank at `length` on 8 ranks with fp8 experts, against this GPU's memory."""
    import torch

    from mmx.model.config import MiniMaxConfig
    from mmx.model.generate import planned_chunk
    from mmx.model.parallel.plan import COMM_RESERVE, memory_plan

    config = MiniMaxConfig.from_name("minimax-text-01")
    plan = memory_plan(
        config,
        length=length,
        dtype_bytes=2,
        tp=8,
        quantize="fp8",
        rows=1,  # one prompt prefilled, then decoded in place (mmx eval with one prompt per call)
        chunk=planned_chunk(config, 2, torch.device("cuda")),
        comm_reserve=COMM_RESERVE,
    )
    total = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    return {
        "length": length,
        "items_gb": {name: round(value / 1e9, 3) for name, value in plan.items.items()},
        "total_gb": round(plan.total / 1e9, 3),
        "device_total_gb": round(total / 1e9, 3) if total else None,
        "fits": None if total is None else plan.total <= total,
    }


def data_parallel(runs: Path, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall time, efficiency against the one-GPU run, and equality of records, per D-dpN run."""
    seconds = {step["run"]: step["wall_s"] for step in steps if step["exit"] == 0}

    def generate_s(directory: Path) -> float:
        timings = [r.get("timings") or {} for r in _jsonl(directory / "samples.jsonl")]
        return round(sum(t.get("generate_s") or 0 for t in timings), 2)

    def stable(directory: Path) -> list[str]:
        records = _jsonl(directory / "samples.jsonl")
        kept = [{k: v for k, v in r.items() if k not in ("timings", "batch_size")} for r in records]
        return sorted(json.dumps(r, sort_keys=True) for r in kept)

    base = seconds.get("D-dp1")
    reference = stable(runs / "D-dp1") if (runs / "D-dp1").is_dir() else None
    rows = []
    for n in (1, 2, 4, 8):
        name = f"D-dp{n}"
        if not (runs / name).is_dir():
            continue
        wall = seconds.get(name)
        rows.append(
            {
                "run": name,
                "gpus": n,
                "wall_s": wall,
                "samples": len(_jsonl(runs / name / "samples.jsonl")),
                "generate_gpu_s": generate_s(runs / name),  # summed over ranks: the per-prompt speed, unscaled
                "efficiency": round(base / (n * wall), 3) if base and wall else None,
                "identical_to_one_gpu": None if reference is None else stable(runs / name) == reference,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["A", "B", "C", "D"])
    parser.add_argument("runs", type=Path, help="the folder scale_batch.sh wrote the run directories to")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args()
    steps = _jsonl(args.runs / "timings.jsonl")
    summary: dict[str, Any] = {"phase": args.phase, "machine": machine(), "steps": steps}
    summary["bench"] = bench_runs(args.runs)
    refusal = args.runs / "A-refused.txt"
    if refusal.is_file():
        summary["refusal"] = [line for line in refusal.read_text().splitlines() if line.startswith("error:")]
    if args.phase == "C":
        summary["full_model_plan"] = full_model_plan(4 << 20)
    if args.phase == "D":
        summary["data_parallel"] = data_parallel(args.runs, steps)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
