#!/usr/bin/env bash
# The GPU measurements of docs/speed.md, in parts that each keep to a time box so a call ends (and packs what it has)
# before the device's limit. Run the parts in the order given; a sweep part that runs out of time resumes where it
# stopped when run again with its run directory carried back (RESUME_DIR).
#
#   tests        the CUDA tests of this work: grouped MoE routing without a sync, graph-replayed decode, measured
#                prefill chunks (tests/model, tests/workflows/bench, marked gpu)                           ≈ 1 min
#   segments     lightning forward at every segment length vs the inference plan's pick, 4k–256k, H=8/64  ≈ 1.5 min
#   kernels      mmx bench kernels --ops prefill, ours vs fla, H=8 and 64: 4k–64k, then 256k, 1m, 4m   ≈ 5 min
#                (fla's autotuning configs compile in parallel first: benchmarks.kernels.precompile)
#   sweep-base   mmx eval ruler on mmx-mini, 13 tasks × 4k…128k × 20 samples, at the commit the speed work
#                started from (BASE_COMMIT, default 7b9bffe; git archive of it, its own device_env)           ≈ 3–6 min
#   sweep-on     the same sweep at this checkout, prefix reuse on (the default)                            ≈ 2–3 min
#   sweep-off    the same with --no-prefix-reuse                                                           ≈ 2–4 min
#   eval4m       one 4M niah_single_1 sample in mmx eval, and mmx bench throughput's 4M prefill             ≈ 2.5 min
#   overhead     benchmarks.eval_overhead: the eval's time in forward passes, 13 tasks × 1 sample, 4k–32k  ≈ 1 min
#   arch         `small` ×8 layers, hybrid vs all-softmax prefill at 1M, chunk auto (measured)             ≈ 1.5 min
#   slice        4 layers of minimax-text-01 at 256k, ours vs transformers (transformers needs ~106 GB: an
#                H200; on an H100 only ours completes)                                                     ≈ 2 min
#   compare      python3 -m benchmarks.speed compare over everything so far: $OUT/summary.json             seconds
#
# Three calls of ≤ 9 minutes (BUDGET_S=540 each) cover it; the baseline and the new sweep share a call, so their wall
# times come from one card:
#   source benchmarks/gpu_env.sh; BUDGET_S=540 bash benchmarks/speed_batch.sh sweep-base sweep-on compare
#   source benchmarks/gpu_env.sh; BUDGET_S=540 bash benchmarks/speed_batch.sh sweep-off eval4m tests compare
#   source benchmarks/gpu_env.sh; BUDGET_S=540 bash benchmarks/speed_batch.sh kernels segments arch overhead compare
# and `slice` on an H200 (needs_h200). SWEEP_ARGS replaces the sweep's arguments (a dry run on a CPU:
# SWEEP_ARGS="--model random:tiny --lengths 1k --samples 3 --tasks vt --quiet"). Each call writes under $OUT (default ./out): log.txt, runs.tgz (every run
# directory so far: unpack it into a folder and pass RESUME_DIR=that folder to continue or to compare across calls),
# timings.jsonl (wall seconds per command), kernels-*.json, segments.json, overhead.json, tests.log, summary.json.
set -uo pipefail
if (($# == 0)); then
  sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
OUT=${OUT:-./out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
DEADLINE=$((T0 + ${BUDGET_S:-540}))
BASE_COMMIT=${BASE_COMMIT:-7b9bffe}
# shellcheck disable=SC2206  # SWEEP_ARGS (a smaller sweep, e.g. for a dry run on a CPU) splits on spaces on purpose
SWEEP=(${SWEEP_ARGS:---model mmx-mini --max-len 128k --samples 20 --quiet})
runs=/tmp/speed-runs
mkdir -p "$runs"
[ -n "${RESUME_DIR:-}" ] && cp -r "$RESUME_DIR"/. "$runs"/
[ -f "$runs/timings.jsonl" ] && cp "$runs/timings.jsonl" "$OUT/timings.jsonl"

TIMINGS="$OUT/timings.jsonl"
# shellcheck source=benchmarks/timebox.sh
source "$(dirname "$0")/timebox.sh"
pack() {
  cp "$OUT/timings.jsonl" "$runs/" 2>/dev/null
  tar -czf "$OUT/runs.tgz" -C "$runs" .
}
after_step() { pack; }

baseline_env() { # a checkout of BASE_COMMIT in /tmp/mmx-base whose `mmx` shadows this one's (in a subshell only);
  # from BASE_TAR (a `git archive` of it, for a copy of the checkout without .git) when given, its weights from here
  if [ ! -d /tmp/mmx-base ]; then
    mkdir -p /tmp/mmx-base
    if [ -n "${BASE_TAR:-}" ]; then tar -xf "$BASE_TAR" -C /tmp/mmx-base; else git archive "$BASE_COMMIT" | tar -x -C /tmp/mmx-base; fi
    [ -e /tmp/mmx-base/model/weights ] || ln -s "$PWD/model/weights" /tmp/mmx-base/model/weights
  fi
  sed 's#/tmp/mmxsrc#/tmp/mmxbase#g' /tmp/mmx-base/tools/device_env.sh >/tmp/mmx-base-env.sh
}

part() {
  case $1 in
    tests)
      step tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_moe.py \
        tests/model/test_generate.py tests/workflows/bench/test_gpu.py >"$OUT/tests.log" 2>&1
      tail -3 "$OUT/tests.log" ;;
    segments) step segments 150 python3 -m benchmarks.speed segments --out "$OUT/segments.json" ;;
    kernels)
      step precompile 100 python3 -m benchmarks.kernels.precompile --parts 8 --timeout 90
      step kernels-short 140 mmx bench kernels --lengths 4k,8k,16k,32k,64k --heads 8,64 --ops prefill \
        --impls mmx,fla --out "$OUT/kernels-short.json"
      step kernels-long 150 mmx bench kernels --lengths 256k,1m,4m --heads 8,64 --ops prefill --impls mmx,fla \
        --out "$OUT/kernels-long.json" ;;
    sweep-base)
      baseline_env
      step sweep-base 500 bash -c "cd /tmp/mmx-base && source /tmp/mmx-base-env.sh && \
        exec mmx eval ruler ${SWEEP[*]} --out $runs/sweep-base" ;;
    sweep-on) step sweep-on 400 mmx eval ruler "${SWEEP[@]}" --out "$runs/sweep-on" ;;
    sweep-off) step sweep-off 400 mmx eval ruler "${SWEEP[@]}" --no-prefix-reuse --out "$runs/sweep-off" ;;
    eval4m)
      step eval-4m 120 mmx eval ruler --model mmx-mini --tasks niah_single_1 --lengths 4m --samples 1 --quiet \
        --out "$runs/eval-4m"
      step bench-4m 120 mmx bench throughput --model mmx-mini --lengths 4m --batch-sizes "" --decode-steps 0 \
        --repeats 1 --out "$runs/bench-4m" ;;
    overhead)
      step overhead 120 bash -c "exec python3 -m benchmarks.eval_overhead --model mmx-mini --lengths 4k,8k,16k,32k \
        --samples 1 --json > $OUT/overhead.json" ;;
    arch)
      step arch-1m 150 mmx bench throughput --model random:small --layers 8 --arch hybrid,softmax --lengths 1m \
        --batch-sizes "" --decode-steps 0 --budget 120 --out "$runs/arch-1m" ;;
    slice)
      step slice-256k 300 mmx bench throughput --model random:minimax-text-01 --layers 4 --compare-transformers \
        --lengths 256k --batch-sizes "" --decode-steps 0 --budget 270 --out "$runs/slice-256k" ;;
    compare) step compare 60 python3 -m benchmarks.speed compare --runs "$runs" --timings "$OUT/timings.jsonl" \
      --out "$OUT/summary.json" ;;
    *) echo "unknown part $1 (see the head of this file)" >&2 ;;
  esac
}

main() {
  echo "speed_batch $* at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, triton, transformers as t; print("torch", torch.__version__, "triton", triton.__version__,
    "transformers", t.__version__)'
  for p in "$@"; do part "$p"; done
  pack
  echo "=== done at t+$(($(date +%s) - T0)) s: $(ls "$OUT")"
}

main "$@" 2>&1 | tee "$OUT/log.txt"
