#!/usr/bin/env bash
# GPU measurements of mmx past one GPU: 8-bit experts, tensor parallel MiniMax-Text-01, data-parallel sweeps.
#
# Phases, each at most ~9 minutes (BUDGET_S, default 540 s); run them one per call:
#
#   A  one GPU   the tests of mmx.model.parallel (the fp8 matmul on CUDA among them); 4 layers of MiniMax-Text-01
#                (3 lightning + 1 softmax, full width, random weights) with experts in bf16, fp8 and int8: prefill
#                32k, 128k, 512k and decode at batch 1 — speed, peak memory, and the memory plan beside every
#                measured peak; then the full model on one GPU, which the plan must refuse
#   B  8 GPUs    the full MiniMax-Text-01 (random weights), tensor parallel 8, fp8 experts: prefill 128k and 1M,
#                decode with 1M cached
#   C  8 GPUs    one hybrid period of the full model (8 layers: 7 lightning + 1 softmax, full width), tensor parallel
#                8, fp8 experts: prefill 4M and decode with 4M cached (the whole model at 4M needs over ten minutes of
#                softmax attention alone, more than one call); the memory plan of the whole model at 4M is recorded
#   D  2–8 GPUs  a data-parallel sweep: `mmx eval niah` on mmx-mini, 16 depths at 256k, 512k, 1M, on 1 GPU and
#                on 2, 4 and 8 (as many as the machine has) — wall time, scaling efficiency, identical results
#
# Usage, from the repository root of a checkout (mmx need not be installed; benchmarks/gpu_env.sh makes it run):
#   git rev-parse HEAD > .commit      # on the machine with the repository, so results name their commit
#   OUT=./out bash benchmarks/scale_batch.sh A
# Writes under $OUT (default ./out): log-PHASE.txt, runs-PHASE.tgz (the bench and eval run directories), and
# scale-PHASE.json (device, date, commit, every command, the measurements; see benchmarks/scale_summary.py).
set -uo pipefail
PHASE=${1:?"usage: bash benchmarks/scale_batch.sh A|B|C|D (see the top of this file)"}
OUT=${OUT:-./out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
# shellcheck source=/dev/null
source benchmarks/gpu_env.sh
T0=$(date +%s)
DEADLINE=$((T0 + ${BUDGET_S:-540}))
RUNS=/tmp/scale-runs-$PHASE
mkdir -p "$RUNS"
TIMINGS="$RUNS/timings.jsonl"  # one line per step: name, wall seconds, exit code, end time, command
GPUS=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
ALL=$(seq -s, 0 $((GPUS - 1)))

# shellcheck source=benchmarks/timebox.sh
source "$(dirname "$0")/timebox.sh"

bench() {  # bench NAME CAP_S ARGS...: mmx bench throughput into $RUNS/NAME, stopping new measurements in time
  local name=$1 cap=$2
  shift 2
  step "$name" "$cap" mmx bench throughput "$@" --batch-sizes 1 --repeats 1 --budget $((cap - 60)) --out "$RUNS/$name"
}

SLICE=(--model random:minimax-text-01 --layers 4 --lengths 32k,128k,512k --decode-steps 8)
FULL=(--model random:minimax-text-01 --tp 8 --quantize-experts fp8)
NIAH=(mmx eval niah --model mmx-mini --lengths 256k,512k,1m --depths 16 --batch-size 1 --quiet)

phase() {
  case $1 in
    A)
      step A-tests 60 python3 -m pytest -q -p no:cacheprovider tests/model/parallel
      bench A-slice-bf16 150 "${SLICE[@]}"
      bench A-slice-fp8 130 "${SLICE[@]}" --quantize-experts fp8
      bench A-slice-int8 130 "${SLICE[@]}" --quantize-experts int8
      step A-refused 40 sh -c "mmx bench throughput --model random:minimax-text-01 --quantize-experts fp8 \
        --lengths 128k --out $RUNS/A-refused-run 2>$RUNS/A-refused.txt" ;;
    B)
      ((GPUS >= 8)) || { echo "phase B needs 8 GPUs, this machine has $GPUS" >&2; return; }
      bench B-full-tp8 520 "${FULL[@]}" --lengths 128k,1m --decode-steps 8 --devices 0,1,2,3,4,5,6,7 ;;
    C)
      ((GPUS >= 8)) || { echo "phase C needs 8 GPUs, this machine has $GPUS" >&2; return; }
      bench C-period-4m 520 "${FULL[@]}" --layers 8 --lengths 4m --decode-steps 4 --devices 0,1,2,3,4,5,6,7 ;;
    D)
      ((GPUS >= 2)) || { echo "phase D needs 2 GPUs or more, this machine has $GPUS" >&2; return; }
      step D-dp1 200 "${NIAH[@]}" --out "$RUNS/D-dp1"
      for n in 2 4 8; do
        ((n <= GPUS)) && step "D-dp$n" $((30 + 240 / n)) "${NIAH[@]}" --devices "$(seq -s, 0 $((n - 1)))" \
          --out "$RUNS/D-dp$n"
      done ;;
    *) echo "unknown phase $1 (A, B, C or D)" >&2 ;;
  esac
}

main() {
  echo "scale_batch $PHASE at $(date -u +%FT%TZ), commit $(cat .commit 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())'
  echo "GPUs on this machine: $GPUS ($ALL)"
  phase "$PHASE"
  tar -czf "$OUT/runs-$PHASE.tgz" -C "$RUNS" .
  python3 -m benchmarks.scale_summary "$PHASE" "$RUNS" --out "$OUT/scale-$PHASE.json"
  echo "=== done at t+$(($(date +%s) - T0)) s: $(ls "$OUT")"
}

main 2>&1 | tee "$OUT/log-$PHASE.txt"
