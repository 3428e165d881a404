#!/usr/bin/env bash
# Session 3 GPU calls for issues #6 (mmx-mini beyond 128k) and #9 (the measurements session 2 left out). Parts, run in
# the order given, each in its own time box so the call ends (and packs what it has) before the device's limit:
#
#   mini4m        mmx bench throughput on the shipped mmx-mini, prefill and decode at 1M and 4M (#9: 4M on an H100)
#   arch1m        `small` ×8 layers, hybrid vs all-softmax prefill at 1M (#9: hybrid ≥ 5× faster)
#   arch1m:CHUNK  the same with prefill chunks of CHUNK tokens (auto picks 16384 for `small`)
#   profile       results/reference/throughput-profile-prefill.py: `small` ×8 prefill of 256k by chunk size, profiled
#   slice1m       4 layers of minimax-text-01, ours vs transformers, prefill 1M (#9: completes on an H200)
#   ktests        the CUDA kernel tests (tests/kernels), under the current launch defaults
#   kshort        kernel prefill 4k…256k, default outputs form vs MMX_KERNEL_CONFIG fwd_form=masked (short-T cost)
#   ruler:LENS    mmx eval ruler on mmx-mini, 13 tasks × 1 sample at LENS (e.g. ruler:256k,512k,1m); the run
#                 directory is mmx-mini-ruler-<first>-<last>, resumed when carried in under $RESUME_DIR
#
# Usage on the GPU machine, from the repository root:
#   source tools/device_env.sh; BUDGET_S=540 bash tools/gpu_s3.sh mini4m ruler:256k,512k,1m arch1m ktests kshort
# Writes under $OUT: log.txt, runs.tgz (bench and eval run directories), kernels-*.json, ktests.log.
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
DEADLINE=$((T0 + ${BUDGET_S:-540}))
runs=/tmp/s3runs
mkdir -p "$runs"
[ -n "${RESUME_DIR:-}" ] && cp -r "$RESUME_DIR"/. "$runs"/

left() { echo $((DEADLINE - $(date +%s))); }
pack() { tar -czf "$OUT/runs.tgz" -C "$runs" .; }

step() {  # step NAME CAP_S COMMAND...: at most CAP_S seconds and never past the deadline; SIGINT keeps records
  local name=$1 cap=$2 t
  shift 2
  t=$(left)
  ((t > cap)) && t=$cap
  if ((t < 10)); then
    echo "=== $name: skipped, $t s left" >&2
    return
  fi
  echo "=== $name (≤ $t s, $(date -u +%FT%TZ)): $*" >&2
  timeout --signal=INT --kill-after=15 "$t" "$@"
  echo "=== $name: exit $? at t+$(($(date +%s) - T0)) s" >&2
  pack
}

bench() {  # bench NAME CAP_S ARGS...: mmx bench throughput into $runs/NAME, one log line per record
  local name=$1 cap=$2
  shift 2
  step "$name" "$cap" mmx bench throughput "$@" --budget $((cap - 30)) --out "$runs/$name"
}

part() {
  case $1 in
    mini4m) bench mmx-mini-4m 150 --model mmx-mini --lengths 1m,4m --batch-sizes 1,64 ;;
    arch1m) bench arch-1m 130 --model random:small --layers 8 --arch hybrid,softmax --lengths 1m --batch-sizes 1 ;;
    arch1m:*) bench "arch-1m-chunk${1#arch1m:}" 130 --model random:small --layers 8 --arch hybrid,softmax \
      --lengths 1m --batch-sizes 1 --chunk-size "${1#arch1m:}" ;;
    profile) step profile 90 python3 results/reference/throughput-profile-prefill.py ;;
    slice1m) bench slice-1m 200 --model random:minimax-text-01 --layers 4 --compare-transformers --lengths 1m \
      --batch-sizes 1 ;;
    ktests) step ktests 120 python3 -m pytest -q -p no:cacheprovider tests/kernels >"$OUT/ktests.log" 2>&1
      tail -3 "$OUT/ktests.log" ;;
    kshort)
      step kshort-default 70 mmx bench kernels --lengths 4k,16k,64k,256k --heads 64 --ops prefill --impls mmx \
        --out "$OUT/kernels-short-default.json"
      step kshort-masked 70 env MMX_KERNEL_CONFIG='{"fwd_form": "masked"}' mmx bench kernels --lengths 4k,16k,64k,256k \
        --heads 64 --ops prefill --impls mmx --out "$OUT/kernels-short-masked.json" ;;
    ruler:*)
      local lens=${1#ruler:} first last
      first=${lens%%,*}
      last=${lens##*,}
      step "ruler $lens" 9999 mmx eval ruler --lengths "$lens" --samples 1 --quiet \
        --out "$runs/mmx-mini-ruler-$first-$last" ;;
    *) echo "unknown part $1" >&2 ;;
  esac
}

main() {
  echo "gpu_s3 $* at $(date -u +%FT%TZ), source commit $(cat .commit 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, triton, transformers as t; print("torch", torch.__version__, "cuDNN",
    torch.backends.cudnn.version(), "triton", triton.__version__, "transformers", t.__version__)'
  for p in "$@"; do part "$p"; done
  pack
  echo "=== done at t+$(($(date +%s) - T0)) s: $(ls "$OUT")"
}

main "$@" 2>&1 | tee "$OUT/log.txt"
